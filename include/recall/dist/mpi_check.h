// The one check for MPI return codes: MPI_CHECK(MPI_Bcast(...)) throws recall::Error naming the
// call, file:line, rank, host and MPI's error string. MPI's default handler aborts on error, so
// the context switches MPI_COMM_WORLD to MPI_ERRORS_RETURN for these checks to see the codes.
#pragma once

#include <mpi.h>

namespace recall::dist {

// Throws recall::Error for `code` != MPI_SUCCESS ("MPI_Bcast(...) failed at comm.cpp:42 on rank 3
// (host node07): MPI_ERR_TRUNCATE: message truncated").
void mpi_check(int code, const char* call, const char* file, int line);

// This process's rank in MPI_COMM_WORLD (-1 before MPI_Init) and host name, for messages.
int world_rank_or_minus_one();
const char* host_name();

}  // namespace recall::dist

#define MPI_CHECK(call) ::recall::dist::mpi_check((call), #call, __FILE__, __LINE__)
