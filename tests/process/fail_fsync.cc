// LD_PRELOAD shim for fault tests: fsync and fdatasync fail with EIO while
// the file named by DYNAMO_FAIL_FSYNC_TRIGGER exists, like a disk that
// reports a write-back error. Everything else goes to libc.
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

namespace {

bool Failing() {
  const char* trigger = ::getenv("DYNAMO_FAIL_FSYNC_TRIGGER");
  return trigger != nullptr && ::access(trigger, F_OK) == 0;
}

using SyncFn = int (*)(int);

int Call(const char* name, int fd) {
  if (Failing()) {
    errno = EIO;
    return -1;
  }
  auto real = reinterpret_cast<SyncFn>(::dlsym(RTLD_NEXT, name));
  if (real == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  return real(fd);
}

}  // namespace

extern "C" int fsync(int fd) { return Call("fsync", fd); }
extern "C" int fdatasync(int fd) { return Call("fdatasync", fd); }
