/* SentencePiece model reader and detokenizer.
 *
 * Reads a SentencePiece `.model` file (a serialized `ModelProto` from
 * sentencepiece_model.proto) without a protobuf library and turns token ids
 * back into UTF-8 text exactly as SentencePieceProcessor::DecodeIds does.
 * Only decoding is implemented: Moshi produces ids and we print them.
 *
 * Loading validates everything a hostile file could get wrong (wire format,
 * lengths, UTF-8, piece types, duplicate pieces, byte pieces) and refuses
 * what SentencePiece itself refuses; after sp_model_load() succeeds every
 * piece is a non-empty, NUL-free, valid UTF-8 string. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

/* Piece types, numbered as ModelProto.SentencePiece.Type. */
typedef enum {
  SP_PIECE_NORMAL = 1,
  SP_PIECE_UNKNOWN = 2,
  SP_PIECE_CONTROL = 3,
  SP_PIECE_USER_DEFINED = 4,
  SP_PIECE_UNUSED = 5,
  SP_PIECE_BYTE = 6,
} SpPieceType;

/* Largest vocabulary accepted; real models have 32k-256k pieces. */
#define SP_MAX_VOCAB 1000000

typedef struct SpModel SpModel;

SpModel *sp_model_load (const char *path, GError **error);
/* `data` is only read during the call; nothing points into it afterwards.
 * `name_for_errors` prefixes every error message (may be NULL). */
SpModel *sp_model_load_from_data (const guint8 *data, gsize len,
    const char *name_for_errors, GError **error);
void sp_model_free (SpModel *m);

int sp_model_vocab_size (const SpModel *m);
/* Raw piece, e.g. "\u2581the" or "<0x0A>"; NULL if id is out of range. */
const char *sp_model_piece (const SpModel *m, int id);
/* An SpPieceType, or 0 if id is out of range. */
int sp_model_piece_type (const SpModel *m, int id);

/* Special ids as recorded in the TrainerSpec (proto defaults unk 0, bos 1,
 * eos 2, pad -1 when the field is absent); -1 when disabled or when the
 * recorded id is not a valid id of this vocabulary. */
int sp_model_unk_id (const SpModel *m);
int sp_model_bos_id (const SpModel *m);
int sp_model_eos_id (const SpModel *m);
int sp_model_pad_id (const SpModel *m);

/* Streaming detokenizer state.  Feeding ids one at a time through
 * sp_decode_piece() and ending with sp_decode_flush() appends exactly the
 * text that sp_decode_ids() returns for the whole sequence; text is emitted
 * as early as that allows (a run of byte pieces is held back only while it
 * ends in an incomplete UTF-8 character).  Plain data: no cleanup needed. */
typedef struct {
  guint8 pending[4]; /* byte-fallback bytes not yet decodable */
  guint8 n_pending;
  /* TRUE until the sequence has produced visible text: while set, the leading
   * U+2581 of a piece is dropped (SentencePiece's add_dummy_prefix undo). */
  gboolean at_start;
} SpDecodeState;

void sp_decode_state_init (SpDecodeState *state);
/* Appends the text of `id` to `out`, as SentencePiece decodes it:
 *  - CONTROL (<s>, </s>, <pad>): nothing;
 *  - UNKNOWN: TrainerSpec.unk_surface, by default " \u2047 " (" ⁇ ");
 *  - NORMAL, USER_DEFINED, UNUSED: the piece with U+2581 turned into ' ',
 *    minus a leading U+2581 while state->at_start (unless the model's
 *    NormalizerSpec turns off both add_dummy_prefix and
 *    remove_extra_whitespaces);
 *  - BYTE "<0xNN>": collected until they form a UTF-8 character; a byte that
 *    cannot start one becomes U+FFFD.  <0x00> gives nothing (SentencePiece
 *    gives U+0000) so that the text never contains NUL.
 * Ids outside [0, vocab) are ignored (no output, state unchanged) and return
 * FALSE; SentencePiece rejects the whole sequence instead, but a live stream
 * is better served by carrying on.  Note that Moshi's text stream also
 * carries ids its caller should filter first (0 "end of padding" is <unk>
 * in Kyutai's tokenizers and would print " ⁇ "). */
gboolean sp_decode_piece (const SpModel *m, int id, GString *out,
    SpDecodeState *state);
/* Ends the sequence: bytes still pending (an incomplete UTF-8 character)
 * become U+FFFD each, as SentencePiece renders them. */
void sp_decode_flush (const SpModel *m, GString *out, SpDecodeState *state);
/* Whole sequence to a newly allocated UTF-8 string (g_free); out-of-range
 * ids are skipped as in sp_decode_piece(). */
char *sp_decode_ids (const SpModel *m, const int *ids, int n);

G_END_DECLS
