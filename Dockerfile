# syntax=docker/dockerfile:1
# One image for the five services (and the migration Job): each target below only sets the
# command; the Kubernetes manifests in mesh/ run the same image with their own command.
#
#   docker build --target gateway -t asset-withdrawal-system:dev .
#
# Build stage: the project's wheel and its runtime dependencies at the versions pinned in
# requirements.lock, installed into /opt/venv with their bytecode compiled.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m pip install "uv==$(grep -E '^uv==' requirements.lock | cut -d= -f3)"
COPY pyproject.toml README.md ./
COPY gen/ gen/
COPY withdrawal_shared/ withdrawal_shared/
COPY svc_gateway/ svc_gateway/
COPY svc_processor/ svc_processor/
COPY svc_signer/ svc_signer/
COPY svc_monitor/ svc_monitor/
COPY svc_webhooks/ svc_webhooks/
COPY awctl/ awctl/
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && uv venv /opt/venv --python "$(command -v python)" \
 && uv pip install --python /opt/venv/bin/python --compile-bytecode \
      --constraint requirements.lock /dist/*.whl

# Runtime stage: the interpreter, the virtual environment and the compiled contracts; no
# compiler, no sources, no secrets. It runs as a numeric non-root user with a read-only root
# filesystem: AWS_VAR_DIR (a volume in Kubernetes) and /tmp are the only writable paths.
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 aws \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin aws \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/aws
COPY --from=build /opt/venv /opt/venv
COPY contracts/build/ /opt/aws/contracts/build/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AWS_VAR_DIR=/var/lib/aws \
    AWS_CONTRACTS_DIR=/opt/aws/contracts/build
WORKDIR /var/lib/aws
USER 10001:10001

FROM runtime AS gateway
EXPOSE 50051 8080 9101
CMD ["python", "-m", "svc_gateway"]

FROM runtime AS processor
EXPOSE 50053 9102
CMD ["python", "-m", "svc_processor"]

FROM runtime AS signer
EXPOSE 50052 9103
CMD ["python", "-m", "svc_signer"]

FROM runtime AS monitor
EXPOSE 50054 9104
CMD ["python", "-m", "svc_monitor"]

FROM runtime AS webhooks
EXPOSE 50055 9105
CMD ["python", "-m", "svc_webhooks"]

FROM runtime AS migrate
CMD ["python", "-m", "withdrawal_shared.db.migrate"]
