// The rendezvous through a file on a filesystem every rank sees (dist.init=file): how NCCL's
// unique id reaches the other ranks when MPI cannot carry it across nodes. Rank 0 publishes the
// bytes; every other rank polls for the file and reads them.
//
// The file is `attnlab-rendezvous 1 <n>\n` and the n bytes in hex. It appears complete or not at
// all: it is written to a temporary name, synced, then hard-linked to the path (which, unlike a
// rename, fails if the path exists). A path that already exists is refused rather than
// overwritten: the other ranks may already have read the stale id in it and would wait forever
// on a communicator that never forms. So each job needs a fresh path (put the job id in it), and
// rank 0 removes the file once every rank has joined.
#pragma once
#include <chrono>
#include <string>

namespace attn::dist {

// Rank 0. Throws naming the path if it exists or cannot be written.
void publish_rendezvous(const std::string& path, const std::string& payload);
// The other ranks: the payload, once the file exists. Polls every 20 ms; throws naming the path
// when `timeout` passes first or the file is not a rendezvous record.
std::string await_rendezvous(const std::string& path, std::chrono::milliseconds timeout);
// Either, by rank: rank 0 publishes `payload` and returns it, the others return what it published.
std::string exchange_through_file(const std::string& path, int rank, const std::string& payload,
                                  std::chrono::milliseconds timeout);
// Removes the file (rank 0, after every rank has read it); a missing file is not an error.
void remove_rendezvous(const std::string& path);

}  // namespace attn::dist
