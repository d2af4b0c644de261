# The one image of the farm: `stylefarm api`, `stylefarm worker` (see docker-compose.yml).
# torch's Linux wheels carry the CUDA runtime; the host's NVIDIA driver comes in through
# the NVIDIA container toolkit (compose: deploy.resources.reservations.devices).
FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 STYLEFARM_DATA_DIR=/data
WORKDIR /app

# Dependencies first: a layer that survives code changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev

VOLUME /data
EXPOSE 8000
CMD ["stylefarm", "api", "--host", "0.0.0.0", "--port", "8000"]
