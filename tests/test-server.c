/* moshi-server protocol tests: the server runs with the tiny models and a
 * libsoup websocket client talks Kyutai's protocol to it (see
 * docs/server.md).  The server process is stopped with SIGTERM at the end
 * and must exit cleanly (0: under ASan, also no leaks). */
#include "../pipelines/server/protocol.h"
#include "picture-util.h"
#include "server-client.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <json-glib/json-glib.h>
#include <glib/gstdio.h>
#include <string.h>

static TsServer server;
static GPtrArray *pages; /* hello.wav as Ogg Opus pages */
static gdouble duration;
/* A MoshiVis server on the tiny MoshiVis. */
static const gchar *const vision_args[] = { "--vision",
  "--model=" MOSHI_BUILD_ROOT "/tests/moshivis-dialog-tiny", NULL };

static TsMessage *
msg_at (TsClient *c, guint i)
{
  return c->messages->pdata[i];
}

static gboolean
has_messages (TsClient *c, gpointer n)
{
  return c->messages->len >= GPOINTER_TO_UINT (n) || c->closed;
}

static gboolean
is_closed (TsClient *c, gpointer unused)
{
  return c->closed;
}

static TsClient *
connect_ready (const gchar *url, const gchar *query)
{
  GError *err = NULL;
  TsClient *c = ts_client_connect (url, query, &err);

  g_assert_no_error (err);
  g_assert_nonnull (c);
  /* handshake + metadata */
  g_assert_true (ts_client_wait (c, has_messages, GUINT_TO_POINTER (2), 20));
  g_assert_false (c->closed);
  g_assert_cmpint (msg_at (c, 0)->kind, ==, 0);
  g_assert_cmpint (msg_at (c, 1)->kind, ==, 4);
  return c;
}

static void
send_pages (TsClient *c, guint first, guint n)
{
  for (guint i = first; i < first + n && i < pages->len; i++)
    ts_client_send (c, 1, g_bytes_get_data (pages->pdata[i], NULL),
        g_bytes_get_size (pages->pdata[i]));
}

static gboolean
enough_audio (TsClient *c, gpointer want)
{
  return ts_client_count (c, 1) >= GPOINTER_TO_UINT (want) || c->closed;
}

/* The metadata must pass the zod schemas of Kyutai's clients
 * (kyutai-labs/moshi client/src/pages/Conversation/hooks/useServerInfo.ts,
 * and kyutai-labs/moshivis's, which wants three more fields): one missing
 * field or a wrong type and the client drops the whole message. */
static void
check_client_schema (GBytes *payload, gint want_image_size)
{
  static const gchar *numbers[] = { "text_temperature", "text_topk",
    "audio_temperature", "audio_topk", "pad_mult", "repetition_penalty_context",
    "repetition_penalty", "text_temperature_gating_influence",
    "image_resolution" };
  static const gchar *strings[] = { "lm_model_file", "instance_name",
    "base_filename" };
  static const gchar *build[] = { "build_timestamp", "build_date", "git_branch",
    "git_timestamp", "git_date", "git_hash", "git_describe",
    "rustc_host_triple", "rustc_version", "cargo_target_triple" };
  JsonParser *parser = json_parser_new ();
  JsonObject *o, *b;
  gsize len;
  const gchar *p = g_bytes_get_data (payload, &len);

  g_assert_true (json_parser_load_from_data (parser, p, len, NULL));
  o = json_node_get_object (json_parser_get_root (parser));
  g_assert_nonnull (o);
  for (guint i = 0; i < G_N_ELEMENTS (numbers); i++) {
    JsonNode *n = json_object_get_member (o, numbers[i]);

    g_assert_nonnull (n);
    g_assert_true (JSON_NODE_HOLDS_VALUE (n));
    g_assert_true (json_node_get_value_type (n) == G_TYPE_INT64
        || json_node_get_value_type (n) == G_TYPE_DOUBLE);
  }
  for (guint i = 0; i < G_N_ELEMENTS (strings); i++)
    g_assert_nonnull (json_object_get_string_member (o, strings[i]));
  b = json_object_get_object_member (o, "build_info");
  g_assert_nonnull (b);
  for (guint i = 0; i < G_N_ELEMENTS (build); i++)
    g_assert_nonnull (json_object_get_string_member (b, build[i]));
  g_assert_cmpint (json_object_get_int_member (o, "image_resolution"), ==,
      want_image_size);
  g_object_unref (parser);
}

static void
test_handshake (void)
{
  TsClient *c = connect_ready (server.url, "");
  gsize len;
  const guint8 *p = g_bytes_get_data (msg_at (c, 0)->payload, &len);
  JsonParser *parser = json_parser_new ();
  GError *err = NULL;

  /* As Kyutai's Rust server: u32 protocol version 0, u32 model version 0. */
  g_assert_cmpuint (len, ==, 8);
  for (guint i = 0; i < 8; i++)
    g_assert_cmpint (p[i], ==, 0);
  p = g_bytes_get_data (msg_at (c, 1)->payload, &len);
  json_parser_load_from_data (parser, (const gchar *) p, len, &err);
  g_assert_no_error (err);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)));
  g_object_unref (parser);
  check_client_schema (msg_at (c, 1)->payload, 0);
  ts_client_free (c, FALSE);
}

/* Decodes concatenated Ogg Opus pages; returns the number of samples. */
static guint64
decode_ogg (GByteArray *ogg)
{
  GstElement *p = gst_parse_launch ("appsrc name=src caps=application/ogg "
                                    "! oggdemux ! opusdec "
                                    "! audio/x-raw,format=S16LE "
                                    "! appsink name=sink sync=false",
      NULL);
  GstElement *src = gst_bin_get_by_name (GST_BIN (p), "src");
  GstElement *sink = gst_bin_get_by_name (GST_BIN (p), "sink");
  GstSample *s;
  guint64 samples = 0;

  gst_element_set_state (p, GST_STATE_PLAYING);
  gst_app_src_push_buffer (GST_APP_SRC (src),
      gst_buffer_new_memdup (ogg->data, ogg->len));
  gst_app_src_end_of_stream (GST_APP_SRC (src));
  while ((s = gst_app_sink_pull_sample (GST_APP_SINK (sink)))) {
    GstCaps *caps = gst_sample_get_caps (s);
    gint ch = 1;

    gst_structure_get_int (gst_caps_get_structure (caps, 0), "channels", &ch);
    samples += gst_buffer_get_size (gst_sample_get_buffer (s)) / 2 / ch;
    gst_sample_unref (s);
  }
  gst_element_set_state (p, GST_STATE_NULL);
  gst_object_unref (src);
  gst_object_unref (sink);
  gst_object_unref (p);
  return samples;
}

static void
test_roundtrip (void)
{
  TsClient *c = connect_ready (server.url, "?text_seed=7");
  GByteArray *ogg = g_byte_array_new ();
  guint audio = 0, text = 0, want = (guint) (duration / 0.02 * 0.7);
  guint64 samples;

  send_pages (c, 0, pages->len);
  ts_client_wait (c, enough_audio, GUINT_TO_POINTER (want), 60);
  g_assert_false (c->closed);
  for (guint i = 0; i < c->messages->len; i++) {
    TsMessage *m = msg_at (c, i);
    gsize len;
    const guint8 *p = g_bytes_get_data (m->payload, &len);
    GError *err = NULL;

    if (m->kind == 1) {
      /* Each audio message: whole, valid Ogg pages. */
      g_assert_cmpuint (ms_ogg_check_pages (p, len, &err), >=, 1);
      g_assert_no_error (err);
      if (audio == 0)
        g_assert_nonnull (memmem (p, len, "OpusHead", 8));
      g_byte_array_append (ogg, p, len);
      audio++;
    } else if (m->kind == 2) {
      g_assert_true (g_utf8_validate ((const gchar *) p, len, NULL));
      text++;
    } else {
      g_assert_cmpint (m->kind, ==, i == 0 ? 0 : 4);
    }
  }
  g_test_message ("%.2f s in: %u audio messages, %u text messages out",
      duration, audio, text);
  g_assert_cmpuint (audio, >=, want);
  g_assert_cmpuint (text, >, 0);
  samples = decode_ogg (ogg);
  g_test_message ("decoded %" G_GUINT64_FORMAT " samples", samples);
  /* 20 ms per page, less the Opus pre-skip. */
  g_assert_cmpuint (samples, >=, (guint64) ((audio - 2) * 0.02 * 24000 * 0.9));
  g_byte_array_unref (ogg);
  ts_client_free (c, FALSE);
}

/* As Kyutai's client (opus-recorder, maxFramesPerPage 2) sends them:
 * several packets per page, and here also several pages per message. */
static void
test_multi_packet_pages (void)
{
  gchar *wav = ts_sample_path ();
  GPtrArray *big = ts_make_ogg_pages_full (wav, 40, NULL);
  TsClient *c = connect_ready (server.url, "");
  guint i;

  g_free (wav);
  g_assert_cmpuint (big->len, <, pages->len * 3 / 4);
  for (i = 0; i + 1 < big->len; i += 2) {
    GByteArray *two = g_byte_array_new ();

    g_byte_array_append (two, g_bytes_get_data (big->pdata[i], NULL),
        g_bytes_get_size (big->pdata[i]));
    g_byte_array_append (two, g_bytes_get_data (big->pdata[i + 1], NULL),
        g_bytes_get_size (big->pdata[i + 1]));
    ts_client_send (c, 1, two->data, two->len);
    g_byte_array_unref (two);
  }
  g_assert_true (ts_client_wait (c, enough_audio,
      GUINT_TO_POINTER ((guint) (duration / 0.02 * 0.7)), 60));
  g_assert_null (c->error);
  ts_client_free (c, FALSE);
  g_ptr_array_unref (big);
}

/* opus-recorder (Kyutai's client) writes its AudioContext's rate in
 * OpusHead, e.g. 44100; GStreamer's oggdemux + opusdec would refuse it
 * ("no common format"): the server reads it as 24000 (protocol.h). */
static void
test_opus_head_44100 (void)
{
  gsize len = g_bytes_get_size (pages->pdata[0]);
  guint8 *head = g_memdup2 (g_bytes_get_data (pages->pdata[0], NULL), len);
  TsClient *c = connect_ready (server.url, "");
  gsize hdr;
  guint32 crc;

  hdr = 27 + head[26];
  g_assert_cmpmem (head + hdr, 8, "OpusHead", 8);
  head[hdr + 12] = 44100 & 0xff;
  head[hdr + 13] = 44100 >> 8;
  head[hdr + 14] = head[hdr + 15] = 0;
  memset (head + 22, 0, 4);
  crc = ms_ogg_crc (head, len);
  for (guint i = 0; i < 4; i++)
    head[22 + i] = (crc >> (8 * i)) & 0xff;
  ts_client_send (c, 1, head, len);
  send_pages (c, 1, pages->len);
  g_assert_true (ts_client_wait (c, enough_audio,
      GUINT_TO_POINTER ((guint) (duration / 0.02 * 0.7)), 60));
  g_assert_null (c->error);
  ts_client_free (c, FALSE);
  g_free (head);
}

/* A client that restarts its encoder: a second Ogg stream (new serial,
 * BOS) in the same session. */
static void
test_second_stream (void)
{
  gchar *wav = ts_sample_path ();
  GPtrArray *again = ts_make_ogg_pages (wav, NULL);
  TsClient *c = connect_ready (server.url, "");
  guint before;

  g_free (wav);
  send_pages (c, 0, 100);
  ts_client_wait (c, enough_audio, GUINT_TO_POINTER (50), 30);
  before = ts_client_count (c, 1);
  for (guint i = 0; i < 150; i++)
    ts_client_send (c, 1, g_bytes_get_data (again->pdata[i], NULL),
        g_bytes_get_size (again->pdata[i]));
  ts_client_wait (c, enough_audio, GUINT_TO_POINTER (before + 50), 10);
  g_test_message ("second Ogg stream: %s (%u audio pages before, %u after)",
      c->error ? c->error : "went on", before, ts_client_count (c, 1));
  ts_client_free (c, FALSE);
  g_ptr_array_unref (again);
}

static void
test_image_ignored (void)
{
  TsClient *c = connect_ready (server.url, "");
  static const guint8 jpeg_ish[] = { 0xff, 0xd8, 0xff, 0xe0, 1, 2, 3 };

  ts_client_send (c, 8, jpeg_ish, sizeof jpeg_ish);
  send_pages (c, 0, 60);
  g_assert_true (ts_client_wait (c, enough_audio, GUINT_TO_POINTER (10), 30));
  g_assert_false (c->closed);
  g_assert_cmpuint (ts_client_count (c, 5), ==, 0);
  g_assert_cmpuint (ts_client_count (c, 7), ==, 0);
  ts_client_free (c, FALSE);
}

static void
test_params (void)
{
  TsClient *c = connect_ready (server.url,
      "?text_temperature=0.25&text_topk=7&audio_temperature=0.5"
      "&audio_topk=11&text_seed=1234&audio_seed=99&pad_mult=0"
      "&repetition_penalty=1.1&repetition_penalty_context=64"
      "&image_resolution=448&email=x%40y");
  JsonParser *parser = json_parser_new ();
  JsonObject *o;
  gsize len;
  const gchar *p = g_bytes_get_data (msg_at (c, 1)->payload, &len);

  g_assert_true (json_parser_load_from_data (parser, p, len, NULL));
  o = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpfloat_with_epsilon (json_object_get_double_member (o,
                                      "text_temperature"),
      0.25, 1e-9);
  g_assert_cmpfloat_with_epsilon (json_object_get_double_member (o,
                                      "audio_temperature"),
      0.5, 1e-9);
  g_assert_cmpint (json_object_get_int_member (o, "text_topk"), ==, 7);
  g_assert_cmpint (json_object_get_int_member (o, "audio_topk"), ==, 11);
  g_assert_cmpint (json_object_get_int_member (o, "seed"), ==, 1234);
  /* What Kyutai's client needs to show the server info. */
  for (guint i = 0; i < 3; i++)
    g_assert_true (json_object_has_member (o,
        (const gchar *[]){ "pad_mult", "repetition_penalty_context",
            "repetition_penalty" }[i]));
  g_assert_nonnull (json_object_get_string_member (o, "lm_model_file"));
  g_assert_nonnull (json_object_get_string_member (o, "instance_name"));
  g_assert_true (
      json_object_has_member (json_object_get_object_member (o, "build_info"),
          "git_describe"));
  g_object_unref (parser);
  ts_client_free (c, FALSE);

  /* Malformed values are ignored: the model's defaults (-1) stay. */
  c = connect_ready (server.url, "?text_temperature=hot&audio_topk=-5");
  parser = json_parser_new ();
  p = g_bytes_get_data (msg_at (c, 1)->payload, &len);
  g_assert_true (json_parser_load_from_data (parser, p, len, NULL));
  o = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpfloat (json_object_get_double_member (o, "text_temperature"), ==,
      -1);
  g_assert_cmpint (json_object_get_int_member (o, "audio_topk"), ==, -1);
  g_object_unref (parser);
  ts_client_free (c, FALSE);
}

/* Sends one bad message; expects a kind-5 error then a close. */
static void
expect_error (TsClient *c, const gchar *what)
{
  g_assert_true (ts_client_wait (c, is_closed, NULL, 20));
  g_assert_nonnull (c->error);
  g_test_message ("%s -> error \"%s\", close code %u", what, c->error,
      c->close_code);
}

static void
test_garbage (void)
{
  TsClient *c = connect_ready (server.url, "");
  static const gchar junk[] = "this is not an ogg page at all, is it?";

  ts_client_send (c, 1, junk, sizeof junk);
  expect_error (c, "garbage audio");
  ts_client_free (c, FALSE);
}

static void
test_unknown_kind (void)
{
  TsClient *c = connect_ready (server.url, "");
  static const guint8 junk[] = { 1, 2, 3, 4 };

  ts_client_send (c, 42, junk, sizeof junk);
  ts_client_send (c, 3, junk, 1); /* control: unused in streaming mode */
  ts_client_send (c, 6, NULL, 0); /* ping */
  ts_client_send (c, 0xff, NULL, 0);
  /* websocket text message: ignored */
  soup_websocket_connection_send_text (c->ws, "hello");
  send_pages (c, 0, 60);
  g_assert_true (ts_client_wait (c, enough_audio, GUINT_TO_POINTER (10), 30));
  g_assert_false (c->closed);
  g_assert_null (c->error);
  ts_client_free (c, FALSE);
}

static void
test_truncated_page (void)
{
  TsClient *c = connect_ready (server.url, "");
  GBytes *first = pages->pdata[0];

  send_pages (c, 0, 2);
  /* Half of a page. */
  ts_client_send (c, 1, g_bytes_get_data (pages->pdata[5], NULL),
      g_bytes_get_size (pages->pdata[5]) / 2);
  expect_error (c, "truncated page");
  ts_client_free (c, FALSE);

  /* A page whose header promises more than is there. */
  c = connect_ready (server.url, "");
  ts_client_send (c, 1, g_bytes_get_data (first, NULL), 28);
  expect_error (c, "truncated header");
  ts_client_free (c, FALSE);
}

static void
test_huge_message (void)
{
  TsClient *c = connect_ready (server.url, "");
  gsize n = 300 * 1024; /* above --max-message-kb=256 */
  guint8 *big = g_malloc0 (n);

  memcpy (big, "OggS", 4);
  ts_client_send (c, 1, big, n);
  g_assert_true (ts_client_wait (c, is_closed, NULL, 20));
  g_test_message ("huge message -> close code %u", c->close_code);
  /* libsoup drops the connection (1009 or no close frame at all). */
  g_assert_true (
      c->close_code == SOUP_WEBSOCKET_CLOSE_TOO_BIG || c->close_code == 0);
  g_free (big);
  ts_client_free (c, FALSE);
}

/* A well-formed Ogg page (right CRC) carrying something that is not Opus:
 * the pipeline fails, the session ends with an error. */
static void
test_not_opus (void)
{
  TsClient *c = connect_ready (server.url, "");
  guint8 page[27 + 1 + 19] = { 0 };
  guint32 crc;

  memcpy (page, "OggS", 4);
  page[5] = 2; /* BOS */
  page[14] = 0x42; /* serial */
  page[26] = 1;
  page[27] = 19;
  memcpy (page + 28, "NotOpusHeadAtAll!!!", 19);
  crc = ms_ogg_crc (page, sizeof page);
  page[22] = crc & 0xff;
  page[23] = (crc >> 8) & 0xff;
  page[24] = (crc >> 16) & 0xff;
  page[25] = crc >> 24;
  ts_client_send (c, 1, page, sizeof page);
  /* A second non-BOS page with garbage, so the demuxer gets going. */
  page[5] = 0;
  page[18] = 1;
  memset (page + 22, 0, 4);
  crc = ms_ogg_crc (page, sizeof page);
  page[22] = crc & 0xff;
  page[23] = (crc >> 8) & 0xff;
  page[24] = (crc >> 16) & 0xff;
  page[25] = crc >> 24;
  for (int i = 0; i < 20; i++)
    ts_client_send (c, 1, page, sizeof page);
  /* Either the pipeline reports an error, or it ignores the stream; the
   * session must not hang the server. */
  ts_client_wait (c, is_closed, NULL, 5);
  g_test_message ("non-Opus Ogg -> %s", c->error ? c->error : "ignored");
  ts_client_free (c, FALSE);
}

static void
test_vanishing_client (void)
{
  TsClient *c = connect_ready (server.url, "");
  gsize rss0;

  send_pages (c, 0, 100);
  ts_client_wait (c, enough_audio, GUINT_TO_POINTER (5), 10);
  ts_client_free (c, TRUE);
  /* The server goes on. */
  rss0 = ts_server_rss_kb (&server);
  c = connect_ready (server.url, "");
  send_pages (c, 0, 60);
  g_assert_true (ts_client_wait (c, enough_audio, GUINT_TO_POINTER (10), 30));
  ts_client_free (c, FALSE);
  g_assert_cmpuint (rss0, >, 0);
}

static void
test_max_sessions (void)
{
  TsClient *a = connect_ready (server.url, "");
  TsClient *b = connect_ready (server.url, "");
  GError *err = NULL;
  TsClient *c = ts_client_connect (server.url, "", &err);

  g_assert_no_error (err);
  g_assert_true (ts_client_wait (c, is_closed, NULL, 10));
  g_assert_nonnull (c->error);
  g_assert_nonnull (strstr (c->error, "busy"));
  g_assert_cmpuint (c->close_code, ==, SOUP_WEBSOCKET_CLOSE_POLICY_VIOLATION);
  g_assert_cmpuint (ts_client_count (c, 0), ==, 0);
  ts_client_free (c, FALSE);
  ts_client_free (a, FALSE);
  ts_client_free (b, FALSE);
  /* The slots are free again. */
  a = connect_ready (server.url, "");
  ts_client_free (a, FALSE);
}

static void
test_idle_timeout (void)
{
  TsClient *c = connect_ready (server.url, "");
  gint64 t0 = g_get_monotonic_time ();

  g_assert_true (ts_client_wait (c, is_closed, NULL, 15));
  g_assert_nonnull (c->error);
  g_assert_nonnull (strstr (c->error, "idle"));
  /* --idle-timeout=3 */
  g_assert_cmpint (g_get_monotonic_time () - t0, >=, 2 * G_USEC_PER_SEC);
  ts_client_free (c, FALSE);
}

static void
test_sequential_sessions (void)
{
  gsize rss_after_warmup = 0, rss_end;
  guint n = 40;

  for (guint i = 0; i < n; i++) {
    TsClient *c = connect_ready (server.url, "");

    send_pages (c, 0, 40);
    ts_client_wait (c, enough_audio, GUINT_TO_POINTER (8), 20);
    g_assert_cmpuint (ts_client_count (c, 1), >=, 8);
    ts_client_free (c, i % 3 == 2);
    if (i == 9)
      rss_after_warmup = ts_server_rss_kb (&server);
  }
  rss_end = ts_server_rss_kb (&server);
  g_test_message ("server RSS after 10 sessions: %zu KiB, after %u: %zu KiB",
      rss_after_warmup, n, rss_end);
#ifndef __SANITIZE_ADDRESS__
  /* Allocator noise, not a per-session leak (30 sessions). Under ASan the
   * quarantine of freed memory grows the RSS; LeakSanitizer checks the
   * server at exit instead. */
  g_assert_cmpuint (rss_end, <, rss_after_warmup + 8 * 1024);
#endif
}

/* A PNG picture (w x h test card) as file bytes, made with GStreamer. */
static GBytes *
make_png (gint w, gint h, const gchar *pattern)
{
  GBytes *png = tp_encode ("pngenc", w, h, pattern);

  g_assert_nonnull (png);
  return png;
}

static gboolean
enough_colored (TsClient *c, gpointer want)
{
  return ts_client_count (c, 7) >= GPOINTER_TO_UINT (want) || c->closed;
}

/* A MoshiVis server on the tiny MoshiVis: the image comes first, then the
 * handshake; words come as kind 7 with the gate intensity; a new picture
 * mid-conversation is taken and the conversation goes on; audio before the
 * handshake and an undecodable image end the session with an error. */
static void
test_vision_server (void)
{
  TsServer vs;
  TsClient *c;
  GError *err = NULL;
  static const guint8 junk[] = "not an image";
  GBytes *card = make_png (320, 240, "smpte");
  GBytes *ball = make_png (160, 160, "ball");
  guint looking = 0, n7;

  g_assert_true (ts_server_start (&vs, vision_args));
  c = ts_client_connect (vs.url, "", &err);
  g_assert_no_error (err);
  send_pages (c, 0, 3);
  expect_error (c, "audio before the handshake");
  g_assert_nonnull (strstr (c->error, "handshake"));
  g_assert_cmpuint (ts_client_count (c, 0), ==, 0);
  ts_client_free (c, FALSE);

  c = ts_client_connect (vs.url, "", &err);
  g_assert_no_error (err);
  ts_client_send (c, 8, junk, sizeof junk);
  expect_error (c, "undecodable image");
  g_assert_nonnull (strstr (c->error, "undecodable image"));
  ts_client_free (c, FALSE);

  c = ts_client_connect (vs.url, "?xa_start=0&center_crop=true", &err);
  g_assert_no_error (err);
  ts_client_send (c, 8, g_bytes_get_data (card, NULL), g_bytes_get_size (card));
  g_assert_true (ts_client_wait (c, has_messages, GUINT_TO_POINTER (2), 30));
  g_assert_false (c->closed);
  g_assert_cmpint (msg_at (c, 0)->kind, ==, 0);
  g_assert_cmpint (msg_at (c, 1)->kind, ==, 4);
  /* The tiny MoshiVis' image encoder takes 56x56 pictures. */
  check_client_schema (msg_at (c, 1)->payload, 56);
  send_pages (c, 0, pages->len / 2);
  g_assert_true (ts_client_wait (c, enough_colored, GUINT_TO_POINTER (3), 60));
  g_assert_false (c->closed);
  /* The same picture again (kyutai-labs/moshivis's client sends it
   * twice): ignored, the conversation goes on. */
  ts_client_send (c, 8, g_bytes_get_data (card, NULL), g_bytes_get_size (card));
  n7 = ts_client_count (c, 7);
  /* A new picture: taken, the conversation goes on. */
  ts_client_send (c, 8, g_bytes_get_data (ball, NULL), g_bytes_get_size (ball));
  send_pages (c, pages->len / 2, pages->len);
  g_assert_true (
      ts_client_wait (c, enough_colored, GUINT_TO_POINTER (n7 + 3), 60));
  g_assert_false (c->closed);
  g_assert_cmpuint (ts_client_count (c, 2), ==, 0);
  for (guint i = 0; i < c->messages->len; i++) {
    gsize len;
    const guint8 *p;

    if (msg_at (c, i)->kind != 7)
      continue;
    p = g_bytes_get_data (msg_at (c, i)->payload, &len);
    g_assert_cmpuint (len, >=, 2);
    g_assert_cmpuint (p[0], <=, 10);
    looking += p[0] > 0;
  }
  /* The tiny model's gates are wide open on any picture. */
  g_assert_cmpuint (looking, >, 0);
  ts_client_free (c, FALSE);
  g_bytes_unref (card);
  g_bytes_unref (ball);
  g_assert_cmpint (ts_server_stop (&vs), ==, 0);
}

/* kyutai-labs/moshi's client in its vision mode names a picture of its
 * page (?image_url=/assets/...) instead of sending it: the server reads it
 * from its web root.  Other URLs are refused, a missing file waits for a
 * kind-8 image. */
static void
test_vision_image_url (void)
{
  gchar *dir = g_dir_make_tmp ("moshi-webroot-XXXXXX", NULL);
  gchar *sub = g_build_filename (dir, "assets", NULL);
  gchar *index = g_build_filename (dir, "index.html", NULL);
  gchar *pic = g_build_filename (sub, "pic.png", NULL);
  gchar *a_root = g_strconcat ("--web-root=", dir, NULL);
  const gchar *args[] = { "--vision",
    "--model=" MOSHI_BUILD_ROOT "/tests/moshivis-dialog-tiny", a_root, NULL };
  GBytes *card = make_png (64, 48, "smpte");
  TsServer vs;
  TsClient *c;
  GError *err = NULL;

  g_mkdir (sub, 0700);
  g_assert_true (g_file_set_contents (index, "<html></html>", -1, NULL));
  g_assert_true (g_file_set_contents (pic, g_bytes_get_data (card, NULL),
      g_bytes_get_size (card), NULL));
  g_assert_true (ts_server_start (&vs, args));

  /* The picture from the web root: handshake without a kind-8 message. */
  c = connect_ready (vs.url, "?image_url=%2Fassets%2Fpic.png");
  check_client_schema (msg_at (c, 1)->payload, 56);
  send_pages (c, 0, pages->len / 2);
  g_assert_true (ts_client_wait (c, enough_colored, GUINT_TO_POINTER (3), 60));
  g_assert_false (c->closed);
  ts_client_free (c, FALSE);

  /* Outside the web root, another host, missing: no session until a
   * kind-8 image comes. */
  {
    const gchar *bad[] = { "?image_url=/../etc/passwd",
      "?image_url=//example.com/x.jpg",
      "?image_url=http%3A%2F%2F127.0.0.1%2Fx.jpg",
      "?image_url=/assets/nope.png" };

    for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
      c = ts_client_connect (vs.url, bad[i], &err);
      g_assert_no_error (err);
      ts_client_wait (c, has_messages, GUINT_TO_POINTER (1), 1.5);
      g_assert_cmpuint (c->messages->len, ==, 0);
      ts_client_send (c, 8, g_bytes_get_data (card, NULL),
          g_bytes_get_size (card));
      g_assert_true (
          ts_client_wait (c, has_messages, GUINT_TO_POINTER (2), 30));
      g_assert_cmpint (msg_at (c, 0)->kind, ==, 0);
      ts_client_free (c, FALSE);
    }
  }
  g_assert_cmpint (ts_server_stop (&vs), ==, 0);
  g_bytes_unref (card);
  g_unlink (pic);
  g_unlink (index);
  g_rmdir (sub);
  g_rmdir (dir);
  g_free (a_root);
  g_free (pic);
  g_free (index);
  g_free (sub);
  g_free (dir);
}

static gint64
first_time (TsClient *c, guint8 kind)
{
  for (guint i = 0; i < c->messages->len; i++)
    if (msg_at (c, i)->kind == kind)
      return msg_at (c, i)->time_us;
  return G_MAXINT64;
}

/* A client of a vision server that has sent a picture (kind 8). */
static TsClient *
connect_picture (const gchar *url, const void *picture, gsize len)
{
  GError *err = NULL;
  TsClient *c = ts_client_connect (url, "", &err);

  g_assert_no_error (err);
  ts_client_send (c, 8, picture, len);
  return c;
}

static TsClient *
connect_bytes (const gchar *url, GBytes *picture)
{
  return connect_picture (url, g_bytes_get_data (picture, NULL),
      g_bytes_get_size (picture));
}

/* ... that has its session (handshake and metadata received). */
static TsClient *
connect_bytes_ready (const gchar *url, GBytes *picture)
{
  TsClient *c = connect_bytes (url, picture);

  g_assert_true (ts_client_wait (c, has_messages, GUINT_TO_POINTER (2), 60));
  g_assert_cmpint (msg_at (c, 0)->kind, ==, 0);
  return c;
}

/* Pictures are decoded off the server's main loop: while a large one
 * (8192 x 8192, the largest side accepted; 256 MB of pixels to inflate and
 * convert, a few hundred KB to send) is decoded for one client, another
 * client connects, sends a picture that cannot be decoded and gets its
 * error (websocket upgrade, message, a decode of its own, kind-5 message
 * and close) before the first client's handshake; a third client's
 * session starts meanwhile too.  Order of events, not time: decoding in
 * the main loop answered nobody until the large picture was decoded.  The
 * large picture's session then works as any other. */
static void
test_vision_slow_picture (void)
{
  TsServer vs;
  static const guint8 junk[] = "not an image";
  GBytes *big = tp_png_blank (8192, 8192);
  GBytes *card = make_png (64, 48, "smpte");
  TsClient *a, *b, *c;

  g_assert_cmpuint (g_bytes_get_size (big), <, 1024 * 1024);
  g_assert_true (ts_server_start (&vs, vision_args));
  /* Warm-up: the server's first picture and session (plugins loaded). */
  ts_client_free (connect_bytes_ready (vs.url, card), FALSE);
  a = connect_bytes (vs.url, big);
  b = connect_picture (vs.url, junk, sizeof junk);
  c = connect_bytes (vs.url, card);
  expect_error (b, "undecodable image");
  g_assert_nonnull (strstr (b->error, "undecodable image"));
  g_assert_true (ts_client_wait (a, has_messages, GUINT_TO_POINTER (2), 60));
  g_assert_true (ts_client_wait (c, has_messages, GUINT_TO_POINTER (2), 60));
  g_assert_false (a->closed);
  g_assert_false (c->closed);
  g_assert_cmpint (msg_at (a, 0)->kind, ==, 0);
  g_assert_cmpint (msg_at (c, 0)->kind, ==, 0);
  g_assert_cmpint (first_time (b, 5), <, first_time (a, 0));
  check_client_schema (msg_at (a, 1)->payload, 56);
  send_pages (a, 0, pages->len / 2);
  g_assert_true (ts_client_wait (a, enough_colored, GUINT_TO_POINTER (1), 60));
  g_assert_false (a->closed);
  ts_client_free (a, FALSE);
  ts_client_free (b, FALSE);
  ts_client_free (c, FALSE);
  g_assert_cmpint (ts_server_stop (&vs), ==, 0);
  g_bytes_unref (card);
  g_bytes_unref (big);
}

/* A session that ends while its picture is decoded: the client vanishes or
 * closes, or is failed (audio before the handshake), before its first
 * picture is decoded or mid-conversation; the server goes on and exits
 * cleanly (under ASan: no use after free, no leak), also when stopped
 * while a picture is being decoded.  A picture sent while another decodes
 * waits for it: its error still reaches the client. */
static void
test_vision_close_mid_decode (void)
{
  TsServer vs;
  static const guint8 junk[] = "not an image";
  GBytes *big = tp_png_blank (8192, 8192);
  GBytes *card = make_png (64, 48, "smpte");
  TsClient *c;

  g_assert_true (ts_server_start (&vs, vision_args));
  /* Before the session: gone, closed, failed. */
  for (guint i = 0; i < 3; i++) {
    c = connect_bytes (vs.url, big);
    if (i == 2) {
      send_pages (c, 0, 1);
      expect_error (c, "audio before the handshake");
      g_assert_nonnull (strstr (c->error, "handshake"));
    }
    ts_client_free (c, i == 0);
  }
  /* Mid-conversation: a large picture, then junk, which waits for it and
   * ends the session once its turn comes. */
  c = connect_bytes_ready (vs.url, card);
  ts_client_send (c, 8, g_bytes_get_data (big, NULL), g_bytes_get_size (big));
  ts_client_send (c, 8, junk, sizeof junk);
  expect_error (c, "undecodable image");
  g_assert_nonnull (strstr (c->error, "undecodable image"));
  g_assert_cmpuint (c->close_code, ==, SOUP_WEBSOCKET_CLOSE_BAD_DATA);
  ts_client_free (c, FALSE);
  /* Mid-conversation, closed while the large picture decodes. */
  c = connect_bytes_ready (vs.url, card);
  ts_client_send (c, 8, g_bytes_get_data (big, NULL), g_bytes_get_size (big));
  ts_client_free (c, FALSE);
  /* The server goes on.  Stopped with a picture being decoded (most
   * likely: it takes far longer than the 0.2 s given to it to arrive;
   * either way it must exit cleanly). */
  c = connect_bytes_ready (vs.url, card);
  ts_client_send (c, 8, g_bytes_get_data (big, NULL), g_bytes_get_size (big));
  ts_client_wait (c, NULL, NULL, 0.2);
  g_assert_cmpint (ts_server_stop (&vs), ==, 0);
  ts_client_free (c, TRUE);
  g_bytes_unref (card);
  g_bytes_unref (big);
}

static void
test_token (void)
{
  TsServer ts;
  const gchar *args[] = { "--token=s3cret", NULL };
  TsClient *c;
  GError *err = NULL;

  g_assert_true (ts_server_start (&ts, args));
  c = ts_client_connect (ts.url, "", &err);
  g_assert_no_error (err);
  g_assert_true (ts_client_wait (c, is_closed, NULL, 10));
  g_assert_nonnull (c->error);
  g_assert_nonnull (strstr (c->error, "unauthorized"));
  ts_client_free (c, FALSE);
  c = connect_ready (ts.url, "?token=s3cret");
  ts_client_free (c, FALSE);
  c = connect_ready (ts.url, "?worker_auth_id=s3cret");
  ts_client_free (c, FALSE);
  c = ts_client_connect_auth (ts.url, "", "Bearer s3cret", &err);
  g_assert_no_error (err);
  g_assert_true (ts_client_wait (c, has_messages, GUINT_TO_POINTER (2), 10));
  g_assert_cmpint (msg_at (c, 0)->kind, ==, 0);
  ts_client_free (c, FALSE);
  c = ts_client_connect_auth (ts.url, "?token=wrong", "Bearer wrong", &err);
  g_assert_no_error (err);
  g_assert_true (ts_client_wait (c, is_closed, NULL, 10));
  g_assert_cmpuint (ts_client_count (c, 0), ==, 0);
  ts_client_free (c, FALSE);
  g_assert_cmpint (ts_server_stop (&ts), ==, 0);
}

/* SIGTERM while sessions run: the server closes them and exits cleanly
 * (under ASan: without leaks). */
static void
test_shutdown_with_sessions (void)
{
  TsServer ss;
  TsClient *a, *b;

  g_assert_true (ts_server_start (&ss, NULL));
  a = connect_ready (ss.url, "");
  b = connect_ready (ss.url, "");
  send_pages (a, 0, 100);
  send_pages (b, 0, 50);
  ts_client_wait (a, enough_audio, GUINT_TO_POINTER (10), 10);
  g_assert_cmpint (ts_server_stop (&ss), ==, 0);
  g_assert_true (ts_client_wait (a, is_closed, NULL, 10));
  g_assert_true (ts_client_wait (b, is_closed, NULL, 10));
  g_assert_cmpstr (a->error, ==, "server shutting down");
  g_assert_cmpuint (a->close_code, ==, SOUP_WEBSOCKET_CLOSE_GOING_AWAY);
  ts_client_free (a, FALSE);
  ts_client_free (b, FALSE);
}

/* --cert/--key: https and wss (a self-signed certificate made with
 * openssl; skipped without it). */
static void
test_tls (void)
{
  gchar *dir = g_dir_make_tmp ("moshi-tls-XXXXXX", NULL);
  gchar *cert = g_build_filename (dir, "cert.pem", NULL);
  gchar *key = g_build_filename (dir, "key.pem", NULL);
  gchar *a_cert = g_strconcat ("--cert=", cert, NULL);
  gchar *a_key = g_strconcat ("--key=", key, NULL);
  const gchar *args[] = { a_cert, a_key, NULL };
  gchar *openssl[] = { "openssl", "req", "-x509", "-newkey", "rsa:2048",
    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj",
    "/CN=localhost", NULL };
  gint status = -1;
  TsServer ts;
  TsClient *c;

  if (!g_spawn_sync (NULL, openssl, NULL,
          G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL
              | G_SPAWN_STDERR_TO_DEV_NULL,
          NULL, NULL, NULL, NULL, &status, NULL)
      || status != 0) {
    g_test_skip ("no openssl to make a test certificate");
  } else {
    /* Under ASan, LeakSanitizer's tracer crashes ("Tracer caught signal
     * 11", GCC 12's libsanitizer) on the dynamic TLS of the GnuTLS module
     * that glib-networking loads; leaks are checked by the other tests,
     * here only memory errors. */
    gchar *asan = g_strdup (g_getenv ("ASAN_OPTIONS"));
    gchar *no_leaks =
        g_strconcat (asan ? asan : "", asan ? ":" : "", "detect_leaks=0", NULL);

    g_setenv ("ASAN_OPTIONS", no_leaks, TRUE);
    g_assert_true (ts_server_start (&ts, args));
    if (asan)
      g_setenv ("ASAN_OPTIONS", asan, TRUE);
    else
      g_unsetenv ("ASAN_OPTIONS");
    g_free (asan);
    g_free (no_leaks);
    g_assert_true (g_str_has_prefix (ts.url, "https://"));
    c = connect_ready (ts.url, "");
    send_pages (c, 0, 60);
    g_assert_true (ts_client_wait (c, enough_audio, GUINT_TO_POINTER (10), 30));
    ts_client_free (c, FALSE);
    g_assert_cmpint (ts_server_stop (&ts), ==, 0);
  }
  g_unlink (cert);
  g_unlink (key);
  g_rmdir (dir);
  g_free (a_cert);
  g_free (a_key);
  g_free (cert);
  g_free (key);
  g_free (dir);
}

static void
test_static_files (void)
{
  SoupSession *s = soup_session_new ();
  const gchar *paths[] = { "/", "/index.html", "/../meson.build",
    "/%2e%2e/meson.build", "/nope.js" };
  const guint want[] = { 200, 200, 404, 404, 404 };

  for (guint i = 0; i < G_N_ELEMENTS (paths); i++) {
    gchar *url = g_strconcat (server.url, paths[i], NULL);
    SoupMessage *m = soup_message_new ("GET", url);
    GBytes *body = soup_session_send_and_read (s, m, NULL, NULL);

    g_test_message ("GET %s -> %u", paths[i], soup_message_get_status (m));
    g_assert_cmpuint (soup_message_get_status (m), ==, want[i]);
    if (body)
      g_bytes_unref (body);
    g_object_unref (m);
    g_free (url);
  }
  g_object_unref (s);
}

int
main (int argc, char **argv)
{
  const gchar *args[] = { "--max-sessions=2", "--idle-timeout=3",
    "--max-message-kb=256", NULL };
  gchar *wav;
  int ret;

  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  wav = ts_sample_path ();
  pages = ts_make_ogg_pages (wav, &duration);
  g_free (wav);
  g_assert_cmpuint (pages->len, >, 100);
  g_assert_true (ts_server_start (&server, args));

  g_test_add_func ("/server/handshake", test_handshake);
  g_test_add_func ("/server/static-files", test_static_files);
  g_test_add_func ("/server/roundtrip", test_roundtrip);
  g_test_add_func ("/server/multi-packet-pages", test_multi_packet_pages);
  g_test_add_func ("/server/opus-head-44100", test_opus_head_44100);
  g_test_add_func ("/server/second-stream", test_second_stream);
  g_test_add_func ("/server/image-ignored", test_image_ignored);
  g_test_add_func ("/server/params", test_params);
  g_test_add_func ("/server/garbage", test_garbage);
  g_test_add_func ("/server/unknown-kind", test_unknown_kind);
  g_test_add_func ("/server/truncated-page", test_truncated_page);
  g_test_add_func ("/server/huge-message", test_huge_message);
  g_test_add_func ("/server/not-opus", test_not_opus);
  g_test_add_func ("/server/vanishing-client", test_vanishing_client);
  g_test_add_func ("/server/max-sessions", test_max_sessions);
  g_test_add_func ("/server/idle-timeout", test_idle_timeout);
  g_test_add_func ("/server/sequential-sessions", test_sequential_sessions);
  g_test_add_func ("/server/vision", test_vision_server);
  g_test_add_func ("/server/vision-image-url", test_vision_image_url);
  g_test_add_func ("/server/vision-slow-picture", test_vision_slow_picture);
  g_test_add_func ("/server/vision-close-mid-decode",
      test_vision_close_mid_decode);
  g_test_add_func ("/server/token", test_token);
  g_test_add_func ("/server/tls", test_tls);
  g_test_add_func ("/server/shutdown-with-sessions",
      test_shutdown_with_sessions);
  ret = g_test_run ();
  g_assert_cmpint (ts_server_stop (&server), ==, 0);
  g_ptr_array_unref (pages);
  gst_deinit ();
  return ret;
}
