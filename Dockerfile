# GPU image: `docker build -t waveunet .` then, e.g.
#   docker run --gpus all -v /data:/data -v $PWD/runs:/work/runs waveunet train data=musdb_hq data.root=/data/musdb18hq
#   docker run --gpus all -v $PWD:/songs waveunet separate /songs/song.mp3 -c /songs/best.pt -o /songs/separated
# The base image carries the pinned torch (constraints.txt); change both together.
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda13.0-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    WAVEUNET_CACHE=/cache

# musdb needs the ffmpeg binary, even for WAV datasets; MP4/M4A input is read through it
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/waveunet
COPY pyproject.toml constraints.txt README.md ./
COPY waveunet ./waveunet
COPY configs ./configs
COPY scripts ./scripts
RUN pip install -c constraints.txt .

WORKDIR /work
VOLUME ["/cache", "/work/runs"]
ENTRYPOINT ["waveunet"]
CMD ["--help"]
