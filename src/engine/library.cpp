// The engine's table of entry points, exported with C linkage for the loader in the core library.
#include "recall/build_id.h"
#include "recall/engine/library.h"

namespace {

const recall::engine::Library kLibrary = {
    RECALL_ENGINE_BUILD,
    &recall::engine::run_eval,
    &recall::engine::format_eval_table,
    &recall::engine::run_finetune,
    &recall::engine::run_generate,
    &recall::engine::write_hidden_states,
    &recall::engine::pool_own_cells,
    &recall::engine::run_fisher,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const recall::engine::Library* recall_engine_library(
    unsigned long table_size) {
  return table_size == sizeof(recall::engine::Library) ? &kLibrary : nullptr;
}
