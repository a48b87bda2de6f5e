/*
 * replay_main.c -- runs a fuzz target's harness over input files without
 * libFuzzer, in a plain build (gcc, no sanitizer), so that valgrind can
 * watch it: memcheck sees inside liblua5.4, which the sanitizer build does
 * not instrument (a write past an array in Lua's own loader, say, is only
 * noticed by ASan much later, if ever).
 *
 *   build/fuzz/<target>-replay FILE...
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
  int i, n = 0;
  LLVMFuzzerInitialize(&argc, &argv);
  for (i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    uint8_t *data = NULL;
    size_t len = 0, cap = 0, got;
    if (f == NULL) {
      perror(argv[i]);
      return 2;
    }
    do {   /* exactly the file's bytes, in a block of their size */
      if (len == cap) {
        uint8_t *d = realloc(data, cap = cap ? 2 * cap : 4096);
        if (d == NULL) abort();
        data = d;
      }
      got = fread(data + len, 1, cap - len, f);
      len += got;
    } while (got > 0);
    fclose(f);
    {
      uint8_t *exact = malloc(len ? len : 1);
      if (exact == NULL) abort();
      memcpy(exact, data, len);
      free(data);
      LLVMFuzzerTestOneInput(exact, len);
      free(exact);
    }
    n++;
  }
  printf("replayed %d inputs\n", n);
  return 0;
}
