# shellcheck shell=bash
# XLA flags for GPU throughput, sourced by the GPU launch scripts (see launch/README.md).
# Overlap collectives with compute (the latency-hiding scheduler) and combine small collectives;
# keep any flags the user already set, and add ours once (sourcing this twice changes nothing).
for flag in --xla_gpu_enable_latency_hiding_scheduler=true \
            --xla_gpu_all_reduce_combine_threshold_bytes=134217728 \
            --xla_gpu_all_gather_combine_threshold_bytes=134217728 \
            --xla_gpu_reduce_scatter_combine_threshold_bytes=67108864; do
  case " ${XLA_FLAGS:-} " in
    *" ${flag%%=*}="*) ;;  # already set (by the user or an earlier source): theirs wins
    *) XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }$flag" ;;
  esac
done
export XLA_FLAGS
# Let JAX take most of the GPU memory up front (fragmentation is worse when it grows on demand).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
