#include "lora.h"

#include "alloc.h"
#include "gemm.h"
#include "model-error.h"
#include "weights.h"

#include <string.h>

/* "x.weight" and "x.in_proj_weight" -> "x" and "x.in_proj". */
static void
adapter_stem (const char *base, char *stem, size_t len)
{
  g_strlcpy (stem, base, len);
  size_t n = strlen (stem);
  if (n > 7 && !strcmp (stem + n - 7, ".weight"))
    stem[n - 7] = '\0';
  else if (n > 7 && !strcmp (stem + n - 7, "_weight"))
    stem[n - 7] = '\0';
}

gboolean
moshi_lora_merge (MoshiLoadCtx *lora, const char *base_name, float *w, int sets,
    int out, int in, GError **error)
{
  if (!lora || !lora->file)
    return TRUE;
  char stem[256], a_name[300], b_name[300];
  adapter_stem (base_name, stem, sizeof stem);
  g_snprintf (a_name, sizeof a_name, "%s.lora_A.weight", stem);
  g_snprintf (b_name, sizeof b_name, "%s.lora_B.weight", stem);
  const StTensor *ta = st_find (lora->file, a_name);
  const StTensor *tb = st_find (lora->file, b_name);
  if (!ta && !tb)
    return TRUE;
  if (!ta || !tb || ta->ndim != 2 || tb->ndim != 2 || ta->shape[1] != in
      || tb->shape[0] != (int64_t) sets * out || ta->shape[0] % sets
      || tb->shape[1] != ta->shape[0] / sets) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_SHAPE,
        "%s: LoRA adapter of %s does not fit it: %s %s and %s %s, expected "
        "[%d * rank, %d] and [%d, rank] for a [%d, %d] weight",
        st_path (lora->file), base_name, a_name, ta ? "present" : "missing",
        b_name, tb ? "present" : "missing", sets, in, sets * out, sets * out,
        in);
    return FALSE;
  }
  const int rank = (int) ta->shape[0] / sets;
  float *A = st_dup_f32 (lora->file, ta, error);
  float *B = A ? st_dup_f32 (lora->file, tb, error) : NULL;
  if (!B) {
    moshi_free (A);
    return FALSE;
  }
  /* W_s += (scaling B_s) A_s: a GEMM with A_s as the packed operand. */
  gboolean ok = TRUE;
  for (size_t i = 0; i < (size_t) sets * out * rank; i++)
    B[i] *= lora->scaling;
  for (int s = 0; s < sets && ok; s++) {
    MoshiPackedB pa;
    ok = moshi_packed_init (&pa, A + (size_t) s * rank * in, rank, in, in,
        FALSE);
    if (ok) {
      moshi_gemm_packed (NULL, out, B + (size_t) s * out * rank, rank, &pa,
          NULL, TRUE, w + (size_t) s * out * in, in);
      moshi_packed_clear (&pa);
    }
  }
  moshi_free (A);
  moshi_free (B);
  if (!ok) {
    g_set_error (error, MOSHI_MODEL_ERROR, MOSHI_MODEL_ERROR_IO,
        "out of memory merging the LoRA adapter of %s", base_name);
    return FALSE;
  }
  lora->applied++;
  return TRUE;
}
