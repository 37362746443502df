// Forward-pass throughput of the recall engine: embedding, all blocks, final norm and logits for
// a batch of random tokens, timed over several iterations after warm-up. Prints tokens/s; run by
// bench/forward_vs_hf.py next to Hugging Face transformers on the same model and threads.
//   bench_forward MODEL_DIR [batch=4] [seq=128] [iters=5] [threads=0 (libtorch default)] [dtype]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "recall/engine/model.h"

int main(int argc, char** argv) {
  using namespace recall;
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_forward MODEL_DIR [batch] [seq] [iters] [threads] [dtype] [device]\n");
    return 2;
  }
  try {
    const std::string dir_path = argv[1];
    const int64_t batch = argc > 2 ? std::stoll(argv[2]) : 4;
    const int64_t seq = argc > 3 ? std::stoll(argv[3]) : 128;
    const int64_t iters = argc > 4 ? std::stoll(argv[4]) : 5;
    const int threads = argc > 5 ? std::stoi(argv[5]) : 0;
    const std::string dtype = argc > 6 ? argv[6] : "float32";
    const std::string device = argc > 7 ? argv[7] : "cpu";
    if (threads > 0) at::set_num_threads(threads);
    engine::LoadOptions lo;
    lo.dtype = engine::parse_compute_dtype(dtype);
    lo.device = engine::parse_device(device);
    const engine::Model model = engine::Model::load(open_model_dir(dir_path), lo);
    c10::InferenceMode guard;
    at::manual_seed(0);
    at::Tensor ids = at::randint(model.config().vocab_size, {batch, seq}, at::kLong);
    std::vector<std::vector<int64_t>> rows(batch);
    for (int64_t n = 0; n < batch; ++n)
      rows[n] = std::vector<int64_t>(ids[n].data_ptr<int64_t>(), ids[n].data_ptr<int64_t>() + seq);
    const engine::Batch b = engine::make_batch(rows, lo.device);
    auto sync = [&] {
      if (lo.device.is_cuda()) model.forward_logits(b).sum().item<float>();
    };
    model.forward_logits(b);  // warm-up
    sync();
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < iters; ++i) {
      at::Tensor logits = model.forward_logits(b);
      if (lo.device.is_cuda()) logits.sum().item<float>();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("recall forward: batch %lld x %lld tokens, %s, %d threads: %.1f tokens/s (%.4f s/iter)\n",
                static_cast<long long>(batch), static_cast<long long>(seq), dtype.c_str(),
                at::get_num_threads(), batch * seq * iters / s, s / iters);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_forward: error: %s\n", e.what());
    return 1;
  }
}
