// Entry points of recall's subcommands; each lives in jobs/<name>.cpp and is dispatched by
// jobs/main.cpp. argv[0] is the subcommand name.
#pragma once

namespace recall::jobs {

int inspect(int argc, char** argv);
int convert(int argc, char** argv);
int merge(int argc, char** argv);
int preflight(int argc, char** argv);
int verify(int argc, char** argv);
int export_h5(int argc, char** argv);
int hidden_states(int argc, char** argv);
int generate(int argc, char** argv);
int eval(int argc, char** argv);
int finetune(int argc, char** argv);
int sweep(int argc, char** argv);
int config(int argc, char** argv);

}  // namespace recall::jobs
