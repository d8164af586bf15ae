# One image for every Interlock process of the scaled-out deployment (docker-compose.yml):
# serve, relay, intake, enforce and snapshot differ only by their command.
FROM python:3.11-slim

# psycopg (eventsourcing's PostgreSQL persistence) is pure Python over the system libpq.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY projections ./projections
COPY consumers ./consumers
COPY schemas ./schemas
COPY interlock ./interlock
RUN pip install . && rm -rf /src

# Run unprivileged; /snapshots is where the snapshot volume is mounted (owned by this user so
# that a fresh named volume is writable by the snapshot writer).
RUN useradd --system --uid 10001 --create-home --home-dir /home/interlock interlock \
    && mkdir -p /snapshots /data \
    && chown interlock:interlock /snapshots /data
USER interlock
WORKDIR /data

EXPOSE 8080
CMD ["interlock", "--help"]
