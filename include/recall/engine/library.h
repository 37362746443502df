// The model engine (libtorch) as a separately loaded library. librecall_engine.so holds every
// translation unit that includes torch; the core library and the `recall` executable do not link
// it, so commands that never run a model (a baseline merge, preflight, verify, export, sweep)
// start without loading libtorch's ~1 GB of shared libraries and registering its operators
// (0.7 s with a warm page cache, 1.5 s cold, per process, measured in docs/PERFORMANCE.md).
// The first call to library() loads it; programs that link it directly (tests, benchmarks) get
// the linked copy.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "recall/engine/cell_pooling.h"
#include "recall/engine/eval.h"
#include "recall/engine/finetune.h"
#include "recall/engine/fisher.h"
#include "recall/engine/generate.h"
#include "recall/engine/hidden_states.h"

namespace recall::engine {

// The engine's entry points. Built into the library and checked at load time against the build
// identity of the caller, so a stale librecall_engine.so from another build is refused.
struct Library {
  const char* build;  // RECALL_ENGINE_BUILD (recall/build_id.h) of the library's build
  EvalReport (*run_eval)(const EvalOptions&);
  std::string (*format_eval_table)(const EvalReport&);
  FinetuneResult (*run_finetune)(const FinetuneOptions&);
  GenerateResult (*run_generate)(const GenerateOptions&);
  HiddenStatesSummary (*write_hidden_states)(const HiddenStatesOptions&);
  std::vector<PooledHiddenState> (*pool_own_cells)(const dist::Grid&, MPI_Comm, const MergeInputs&,
                                             const SampleTokens&, const ExtractOptions&,
                                             int only_model);
  FisherResult (*run_fisher)(const FisherOptions&);
};

// The exported symbol of librecall_engine.so that returns its table.
inline constexpr const char* kLibrarySymbol = "recall_engine_library";

// Loads the engine on first use (thread-safe) and returns its entry points. Looks for
// librecall_engine.so in $RECALL_ENGINE_LIBRARY (a file path) if set, else next to
// librecall_core.so, else in the executable's ../lib and own directory. Throws recall::Error
// naming every path tried and the loader's message when none loads.
const Library& library();

// True once the engine is loaded in this process (for tests of the lazy loading).
bool library_loaded();

}  // namespace recall::engine
