# The application image used by docker-compose.yml (consumer, dispatcher, worker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY laer ./laer
COPY laer_domain ./laer_domain
COPY consumers ./consumers
COPY flows ./flows
COPY deployments ./deployments
RUN pip install --no-cache-dir -c constraints.txt . \
 && useradd --create-home laer
USER laer
ENV LAER_CODE_DIR=/app
ENTRYPOINT ["laer"]
