/* moshi-server: default model lookup, as pipelines/env.sh does it. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Fills *lm and *mimi (newly allocated) when unset: $MOSHI_MODEL /
 * $MIMI_MODEL, else Kyutai's weights in the local Hugging Face cache, else
 * the tiny random-weight test models of the source tree (*tiny = TRUE).
 * With `vision`, the LM is a MoshiVis checkpoint (kyutai/moshika-vis-
 * pytorch-bf16, else the tiny MoshiVis built with the tests).  Returns
 * FALSE with error set when nothing usable is found. */
gboolean ms_models_find (gboolean vision, gchar **lm, gchar **mimi,
    gboolean *tiny, GError **error);

G_END_DECLS
