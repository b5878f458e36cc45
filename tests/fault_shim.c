// LD_PRELOAD fault injection for the run-safety tests: makes the system calls attnlab's run files
// go through fail the way a full disk, a crash or a bad disk would, on files whose path contains
// ATTNLAB_FAULT_PATH (the fd's path from /proc/self/fd; for rename, either name):
//   ATTNLAB_FAULT_ENOSPC_AFTER=N  N bytes are written to matching files, then write() fails ENOSPC
//                                 (the write that crosses N is a short write first, as on a disk)
//   ATTNLAB_FAULT_KILL=CALL:K     SIGKILL at the K-th matching CALL (write, fsync or rename);
//                                 a write writes half its buffer first (a torn write)
//   ATTNLAB_FAULT_CORRUPT=K       the K-th matching write has one byte in its middle flipped
//                                 (silent corruption: the call succeeds)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void*, size_t);
static int (*real_fsync)(int);
static int (*real_rename)(const char*, const char*);
static long long written, calls_write, calls_fsync, calls_rename;

static const char* env(const char* name) {
  const char* v = getenv(name);
  return v && *v ? v : NULL;
}

static int path_matches(const char* path) {
  const char* want = env("ATTNLAB_FAULT_PATH");
  return want && path && strstr(path, want);
}

static int fd_matches(int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = 0;
  return path_matches(path);
}

// Whether this is the K-th matching call of `name` that ATTNLAB_FAULT_KILL asks to die at.
static int kill_now(const char* name, long long count) {
  const char* k = env("ATTNLAB_FAULT_KILL");
  size_t len = strlen(name);
  return k && strncmp(k, name, len) == 0 && k[len] == ':' && atoll(k + len + 1) == count;
}

ssize_t write(int fd, const void* buf, size_t n) {
  if (!real_write) real_write = (ssize_t(*)(int, const void*, size_t))dlsym(RTLD_NEXT, "write");
  if (fd <= 2 || !fd_matches(fd)) return real_write(fd, buf, n);
  long long call = __atomic_add_fetch(&calls_write, 1, __ATOMIC_SEQ_CST);
  if (kill_now("write", call)) {
    real_write(fd, buf, n / 2);
    raise(SIGKILL);
  }
  const char* corrupt = env("ATTNLAB_FAULT_CORRUPT");
  if (corrupt && atoll(corrupt) == call && n > 0) {
    char* copy = malloc(n);
    memcpy(copy, buf, n);
    copy[n / 2] ^= 0x10;
    ssize_t w = real_write(fd, copy, n);
    free(copy);
    return w;
  }
  const char* after = env("ATTNLAB_FAULT_ENOSPC_AFTER");
  if (after) {
    long long room = atoll(after) - written;
    if (room <= 0) {
      errno = ENOSPC;
      return -1;
    }
    if ((long long)n > room) n = (size_t)room;
  }
  ssize_t w = real_write(fd, buf, n);
  if (w > 0) written += w;
  return w;
}

int fsync(int fd) {
  if (!real_fsync) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  if (fd_matches(fd) && kill_now("fsync", __atomic_add_fetch(&calls_fsync, 1, __ATOMIC_SEQ_CST)))
    raise(SIGKILL);
  return real_fsync(fd);
}

int rename(const char* from, const char* to) {
  if (!real_rename) real_rename = (int (*)(const char*, const char*))dlsym(RTLD_NEXT, "rename");
  if ((path_matches(from) || path_matches(to)) &&
      kill_now("rename", __atomic_add_fetch(&calls_rename, 1, __ATOMIC_SEQ_CST)))
    raise(SIGKILL);
  return real_rename(from, to);
}
