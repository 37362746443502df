# Sourced by the batch scripts in slurm/ (not run on its own): the site's setup, the recall
# binary, the environment of MPI, NCCL and threads, and the MPI launcher.
#
# Site setup, in this order, all optional. None of it relies on sbatch passing the submitting
# shell's environment (sites that default to --export=NONE do not):
#   1. slurm/site.sh beside these scripts, when it exists (start from slurm/site.sh.example);
#   2. the file named by RECALL_SITE_ENV (for per-user or per-project setups);
#   3. `module load $RECALL_MODULES` (Lmod or Environment Modules), e.g.
#      RECALL_MODULES="gcc/12 openmpi/4.1 hdf5/1.10-mpi cuda/12" set in site.sh.
# A site file may also set RECALL_BIN, RECALL_LAUNCHER ("srun --mpi=pmi2", "mpirun"), NCCL_* ...
#
# Uses RECALL_SLURM_DIR (the directory of these scripts), set by the script that sources this.

recall_fail() {
  echo "$RECALL_JOB: error: $*" >&2
  exit 2
}

# Sources a site file; `set -u` and `set -e` are lifted while it runs (site files and module
# init scripts are written for interactive shells).
recall_source() {
  echo "$RECALL_JOB: site setup: sourcing $1"
  set +eu
  # shellcheck disable=SC1090
  source "$1"
  local rc=$?
  set -eu
  [ $rc -eq 0 ] || recall_fail "sourcing $1 failed (exit status $rc)"
}

recall_site_setup() {
  if [ -f "$RECALL_SLURM_DIR/site.sh" ]; then recall_source "$RECALL_SLURM_DIR/site.sh"; fi
  if [ -n "${RECALL_SITE_ENV:-}" ]; then
    [ -f "$RECALL_SITE_ENV" ] || recall_fail "RECALL_SITE_ENV is '$RECALL_SITE_ENV', which does not exist"
    recall_source "$RECALL_SITE_ENV"
  fi
  if [ -n "${RECALL_MODULES:-}" ]; then
    set +eu
    if ! type module > /dev/null 2>&1; then
      for init in "${MODULESHOME:-/nonexistent}/init/bash" /etc/profile.d/lmod.sh /etc/profile.d/modules.sh \
                  /usr/share/lmod/lmod/init/bash; do
        # shellcheck disable=SC1090
        if [ -f "$init" ]; then source "$init"; break; fi
      done
    fi
    type module > /dev/null 2>&1 ||
      recall_fail "RECALL_MODULES is '$RECALL_MODULES' but this node has no 'module' command (Lmod or Environment Modules)"
    echo "$RECALL_JOB: module load $RECALL_MODULES"
    # shellcheck disable=SC2086
    module load $RECALL_MODULES
    local rc=$?
    set -eu
    [ $rc -eq 0 ] || recall_fail "module load $RECALL_MODULES failed (exit status $rc)"
  fi
}

# recall_job_init NAME: site setup, RECALL_BIN, environment. NAME prefixes the log lines.
recall_job_init() {
  RECALL_JOB=$1
  recall_site_setup
  if [ -z "${RECALL_BIN:-}" ]; then
    # The build of the checkout these scripts belong to, else one in the submit directory.
    RECALL_BIN=$RECALL_SLURM_DIR/../build/bin/recall
    [ -x "$RECALL_BIN" ] || RECALL_BIN=${SLURM_SUBMIT_DIR:-$PWD}/build/bin/recall
  fi
  [ -x "$RECALL_BIN" ] ||
    recall_fail "the recall binary is not at $RECALL_BIN; set RECALL_BIN (in slurm/site.sh, the file RECALL_SITE_ENV names, or the environment)"

  # Open MPI as root (containers).
  export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
  # NCCL: report problems in the job log; let NCCL pick the fastest transport (IB when present).
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  export NCCL_ASYNC_ERROR_HANDLING=${NCCL_ASYNC_ERROR_HANDLING:-1}
  # One libtorch thread pool per rank sized to its CPUs. Slurm >= 22.05 no longer passes sbatch's
  # --cpus-per-task on to srun, so each srun step would get 1 CPU per task without this.
  export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
  # srun steps get this script's environment (the modules loaded above), also under --export=NONE.
  export SLURM_EXPORT_ENV=ALL
}

# Sets LAUNCH (an array): RECALL_LAUNCHER when set; srun --mpi=pmix when this Slurm has the PMIx
# plugin (--kill-on-bad-exit: a rank that dies ends the step instead of leaving the others
# waiting); else Open MPI's mpirun, which reads the allocation itself.
recall_launcher() {
  if [ -n "${RECALL_LAUNCHER:-}" ]; then
    read -r -a LAUNCH <<< "$RECALL_LAUNCHER"
    LAUNCH_WHY="RECALL_LAUNCHER"
  elif srun --mpi=list 2>&1 | grep -q pmix; then
    LAUNCH=(srun --mpi=pmix --kill-on-bad-exit=1)
    LAUNCH_WHY="this Slurm has the PMIx plugin"
  else
    LAUNCH=(mpirun)
    LAUNCH_WHY="this Slurm has no PMIx plugin"
  fi
  echo "$RECALL_JOB: launching with ${LAUNCH[*]} ($LAUNCH_WHY)"
}
