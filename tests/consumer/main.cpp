// Imports the installed perfloc and touches the pinned API: a process chunk makes an int.
#include <cstdio>

import perfloc;

int main() {
  perfloc::process_chunk chunk;
  int* p = chunk.make<int>(42);
  if (p == nullptr || *p != 42) {
    std::puts("perfloc consumer: FAILED (make<int>(42) did not give 42)");
    return 1;
  }
  std::puts("perfloc consumer: ok");
  return 0;
}
