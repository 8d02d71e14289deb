# The image of every pod's main container: micromamba on NVIDIA's CUDA base,
# with proteinbenchmark's simulation environment plus rclone and git.
# Rebuilt and pushed to ghcr.io by .github/workflows/rebuild-docker.yaml.
#
# CUDA_VERSION is the only place the image's CUDA is chosen: it picks the base
# image and pins conda's cuda-version so every CUDA package (OpenMM's CUDA
# platform among them) is built for it. Its MAJOR.MINOR must equal CUDA_VERSION
# in run-umbrella-windows.py, which keeps pods off nodes with an older CUDA
# runtime; the workflow reads this line, and a test fails if the launcher
# disagrees. Base images carry MAJOR.MINOR.PATCH; node labels only MAJOR.MINOR.
ARG CUDA_VERSION=12.4.1
ARG MICROMAMBA_VERSION=1.5.10
ARG UBUNTU_CODENAME=jammy
FROM mambaorg/micromamba:${MICROMAMBA_VERSION}-${UBUNTU_CODENAME}-cuda-${CUDA_VERSION}

ARG CUDA_VERSION
# The environment is proteinbenchmark's own simulation environment, fetched at
# build time so the image follows proteinbenchmark's requirements instead of a
# copy that drifts; pin PROTEINBENCHMARK_REF to a tag or commit for a
# reproducible image. Pods pip-install proteinbenchmark itself at run time.
ARG PROTEINBENCHMARK_REF=main
# The packages the pods' own scripts import (each stage's script and the
# protbench_nrp modules it uses, run-job.sh's run-record helper), named here
# rather than left to proteinbenchmark's environment, which lists no click;
# and openff-nagl, which assigns the charges of NAGL force fields such as
# null-0.0.3-pair-opc3. tests/launcher/test_image_imports.py follows the
# scripts' imports and fails when a package is missing here.
ARG POD_PACKAGES="click numpy openmm openff-nagl"
ADD --chown=mambauser:mambauser \
    https://raw.githubusercontent.com/openforcefield/proteinbenchmark/${PROTEINBENCHMARK_REF}/devtools/conda-envs/proteinbenchmark-simulation.yaml \
    /tmp/environment.yaml

# No GPU is visible while building, so tell the solver which CUDA the nodes
# provide; otherwise it would pick CPU-only builds of OpenMM.
RUN CONDA_OVERRIDE_CUDA="${CUDA_VERSION%.*}" micromamba install --yes --name base \
        --file /tmp/environment.yaml \
        "cuda-version=${CUDA_VERSION%.*}" "rclone=1.75" git pip ${POD_PACKAGES} \
    && micromamba clean --all --yes \
    && rm /tmp/environment.yaml

# Kubernetes replaces the image's entrypoint (which activates the environment)
# with the template's command, so put the environment on PATH directly.
ENV PATH=/opt/conda/bin:${PATH}

# mambauser, the base image's user, by number: the Job template's
# securityContext runs every container as uid 57439 so they share the volumes,
# and runAsNonRoot can only verify a numeric user.
USER 57439:57439
