#!/usr/bin/env bash
# On a GPU machine (the device tool): build with CUDA, run the whole suite on CPU and CUDA,
# compute-sanitizer on a small case, and the benchmarks on both. Logs go to $OUT (or ./device-out).
set -uo pipefail
OUT="${OUT:-device-out}"; mkdir -p "$OUT"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" PYTHONUNBUFFERED=1
# The lent machines' default C++ compiler (/opt/gcc) has newer libstdc++ headers than the
# libstdc++ the process loads: any std::ostream use in the extension (every TORCH_CHECK
# message) then segfaults. Build with the system compiler that matches the runtime.
export CC=/usr/bin/gcc CXX=/usr/bin/g++
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
MAX_JOBS=16 python3 -m pip install --no-build-isolation -q . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
(cd /tmp && python3 -c "import wsloss, torch; print('cuda kernels:', wsloss._ops.HAS_CUDA_KERNELS, torch.__version__)")
(cd tests && timeout 300 python3 -m pytest -q -rfEs --timeout=120 -p no:cacheprovider . 2>&1) | tee "$OUT/pytest.log" | grep -E 'FAILED|ERROR|passed|failed' | tail -40
for tool in memcheck racecheck; do
  timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 3 python3 benchmarks/sanitizer_case.py > "$OUT/sanitizer-$tool.log" 2>&1
  echo "compute-sanitizer $tool: exit $?; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
done
timeout 120 python3 benchmarks/dense_crf_loss.py --device cuda --repeats 10 --json "$OUT/densecrf-cuda.json" 2>&1 | tee "$OUT/bench-cuda.log"
(cd tests && timeout 90 python3 -m pytest -q ../benchmarks/test_bench_dense_crf_loss.py -k cuda --benchmark-columns=median,iqr,rounds 2>&1) | tail -12
timeout 90 python3 benchmarks/em.py --device cuda --repeats 20 --json "$OUT/em-cuda.json" 2>&1 | tee "$OUT/bench-em.log"
timeout 90 python3 benchmarks/regularized.py --device cuda --repeats 20 --json "$OUT/regularized-cuda.json" 2>&1 | tee "$OUT/bench-regularized.log"
timeout 240 python3 benchmarks/dense_crf_inference.py --device cuda --repeats 3 --json "$OUT/crf-cuda.json" 2>&1 | tee "$OUT/bench-crf.log"
timeout 120 python3 benchmarks/volumes.py --device cuda --repeats 5 --peers --json "$OUT/volumes-cuda.json" 2>&1 | tee "$OUT/bench-volumes.log"
timeout 60 python3 benchmarks/dense_crf_loss.py --device cpu --repeats 5 --json "$OUT/densecrf-cpu.json" 2>&1 | tee "$OUT/bench-cpu.log"
