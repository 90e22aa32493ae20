/* libFuzzer target for models/sentencepiece.c.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Imodels \
 *       $(pkg-config --cflags glib-2.0) models/sentencepiece.c \
 *       models/model-error.c tests/fuzz/fuzz-sentencepiece.c \
 *       $(pkg-config --libs glib-2.0) -o fuzz-sentencepiece
 *   ./fuzz-sentencepiece tests/fuzz/corpus/sentencepiece
 *
 * Each input is loaded as a model; a failure must come with a message
 * naming the input.  A model that loads must hand out valid pieces and
 * decode any id sequence (including out-of-range ids) to valid, NUL-free
 * UTF-8, the same whole or token by token.  The ids are taken from the last
 * bytes of the input so that mutations steer them too. */
#include "sentencepiece.h"

#include <stdint.h>
#include <string.h>

#define NAME "fuzz-input"
#define MAX_IDS 256

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
check_text (const GString *s)
{
  if (memchr (s->str, 0, s->len) || !g_utf8_validate (s->str, s->len, NULL))
    __builtin_trap ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *error = NULL;
  SpModel *m = sp_model_load_from_data (data, size, NAME, &error);
  if (!m) {
    if (!error || strncmp (error->message, NAME ": ", strlen (NAME ": ")) != 0
        || !g_utf8_validate (error->message, -1, NULL))
      __builtin_trap ();
    g_error_free (error);
    return 0;
  }
  if (error)
    __builtin_trap ();

  int vocab = sp_model_vocab_size (m);
  if (vocab < 1 || vocab > SP_MAX_VOCAB)
    __builtin_trap ();
  for (int i = 0; i < vocab && i < 4096; i++) {
    const char *p = sp_model_piece (m, i);
    int t = sp_model_piece_type (m, i);
    if (!p || !*p || !g_utf8_validate (p, -1, NULL) || t < SP_PIECE_NORMAL
        || t > SP_PIECE_BYTE)
      __builtin_trap ();
  }
  if (sp_model_piece (m, vocab) || sp_model_piece (m, -1))
    __builtin_trap ();
  int special[] = { sp_model_unk_id (m), sp_model_bos_id (m),
    sp_model_eos_id (m), sp_model_pad_id (m) };
  for (size_t i = 0; i < G_N_ELEMENTS (special); i++)
    if (special[i] < -1 || special[i] >= vocab)
      __builtin_trap ();

  /* Ids: every piece once, then ones drawn from the input's tail, spread
   * over [-1, vocab] so out-of-range ids come up too. */
  int ids[2 * MAX_IDS], n = 0;
  for (int i = 0; i < vocab && i < MAX_IDS; i++)
    ids[n++] = i;
  for (size_t i = 0; i + 2 <= size && i < 2 * MAX_IDS; i += 2) {
    unsigned v = (unsigned) data[size - 1 - i] << 8 | data[size - 2 - i];
    ids[n++] = (int) (v % (unsigned) (vocab + 2)) - 1;
  }

  char *whole = sp_decode_ids (m, ids, n);
  GString *out = g_string_new (NULL);
  SpDecodeState st;
  sp_decode_state_init (&st);
  for (int i = 0; i < n; i++) {
    sp_decode_piece (m, ids[i], out, &st);
    check_text (out);
  }
  sp_decode_flush (m, out, &st);
  check_text (out);
  if (strcmp (out->str, whole) != 0)
    __builtin_trap ();
  g_string_free (out, TRUE);
  g_free (whole);
  sp_model_free (m);
  return 0;
}
