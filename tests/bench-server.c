/* moshi-server load test (a benchmark, not a unit test): N clients talk to
 * the server at once on loopback, each sending pipelines/samples/hello.wav
 * as Ogg Opus pages in real time (one 20 ms page every 20 ms), for a bounded
 * time.  Reports the reply latency of every 20 ms output page (arrival time
 * minus the time the input page holding the same audio time was sent:
 * Opus granules are on the same time line both ways) and the frames that
 * did not come back.  Numbers: docs/performance.md.
 *
 * Usage: bench-server [--clients N] [--seconds S] [--threads T]
 *   (S at most the sample's 11 s; the server is started with the tiny
 *   models unless MOSHI_BENCH_MODEL / MOSHI_BENCH_MIMI name others) */
#include "server-client.h"

#include <gst/gst.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static GPtrArray *pages;
static GArray *page_granule; /* guint64 per input page */

typedef struct {
  TsClient *c;
  gint64 t0;
  guint next;
  GArray *sent_us; /* gint64 per input page */
  GArray *latencies; /* gdouble ms */
  guint64 out_granule;
  gboolean done_sending;
} Bench;

static guint64
granule_of (const guint8 *p)
{
  guint64 g = 0;

  for (int i = 7; i >= 0; i--)
    g = (g << 8) | p[6 + i];
  return g;
}

static void
on_message (gpointer client, TsMessage *m, gpointer user)
{
  Bench *b = user;
  gsize len, off = 0;
  const guint8 *p;

  if (m->kind != 1)
    return;
  p = g_bytes_get_data (m->payload, &len);
  while (off + 27 <= len) {
    guint nseg = p[off + 26], body = 0;
    guint64 g = granule_of (p + off);

    for (guint i = 0; i < nseg && off + 27 + i < len; i++)
      body += p[off + 27 + i];
    if (g != G_MAXUINT64 && g > 0) {
      if (g > b->out_granule)
        b->out_granule = g;
      for (guint i = 0; i < b->sent_us->len; i++) {
        if (g_array_index (page_granule, guint64, i) >= g) {
          gdouble ms =
              (m->time_us - g_array_index (b->sent_us, gint64, i)) / 1000.0;

          g_array_append_val (b->latencies, ms);
          break;
        }
      }
    }
    off += 27 + nseg + body;
  }
}

static int
cmp_double (const void *a, const void *b)
{
  gdouble x = *(const gdouble *) a, y = *(const gdouble *) b;

  return x < y ? -1 : x > y;
}

int
main (int argc, char **argv)
{
  gint clients = 2, seconds = 10, threads = 1;
  GOptionEntry entries[] = { { "clients", 0, 0, G_OPTION_ARG_INT, &clients,
                                 "Concurrent sessions", "N" },
    { "seconds", 0, 0, G_OPTION_ARG_INT, &seconds,
        "Audio sent by each client (at most 11)", "S" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &threads,
        "moshilm threads per session", "T" },
    { NULL } };
  GOptionContext *ctx = g_option_context_new ("- moshi-server load test");
  gchar *wav, *a_sessions, *a_threads, *a_model = NULL, *a_mimi = NULL;
  const gchar *args[6] = { NULL };
  gdouble duration;
  TsServer server;
  Bench *bench;
  GArray *all = g_array_new (FALSE, FALSE, sizeof (gdouble));
  guint64 frames_in = 0, frames_out = 0;
  gint64 end_send, end_all;
  guint n_pages, a = 0;
  gsize rss_peak = 0;
  int status = 0;

  gst_init (&argc, &argv);
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, NULL) || clients < 1)
    return 2;
  g_option_context_free (ctx);
  wav = ts_sample_path ();
  pages = ts_make_ogg_pages (wav, &duration);
  g_free (wav);
  page_granule = g_array_new (FALSE, FALSE, sizeof (guint64));
  for (guint i = 0; i < pages->len; i++) {
    guint64 g = granule_of (g_bytes_get_data (pages->pdata[i], NULL));

    g_array_append_val (page_granule, g);
  }
  /* Pages to send: the two header pages + `seconds` of 20 ms pages. */
  n_pages = MIN (pages->len, 2 + (guint) (seconds / 0.02));

  a_sessions = g_strdup_printf ("--max-sessions=%d", clients);
  a_threads = g_strdup_printf ("--threads=%d", threads);
  args[a++] = a_sessions;
  args[a++] = a_threads;
  args[a++] = "--idle-timeout=60";
  if (g_getenv ("MOSHI_BENCH_MODEL"))
    args[a++] = a_model =
        g_strdup_printf ("--model=%s", g_getenv ("MOSHI_BENCH_MODEL"));
  if (g_getenv ("MOSHI_BENCH_MIMI"))
    args[a++] = a_mimi =
        g_strdup_printf ("--mimi-model=%s", g_getenv ("MOSHI_BENCH_MIMI"));
  if (!ts_server_start (&server, args))
    return 1;

  bench = g_new0 (Bench, clients);
  for (gint i = 0; i < clients; i++) {
    GError *err = NULL;

    bench[i].c = ts_client_connect (server.url, "", &err);
    if (!bench[i].c) {
      g_printerr ("client %d: %s\n", i, err->message);
      return 1;
    }
    bench[i].c->on_message = on_message;
    bench[i].c->user = &bench[i];
    bench[i].sent_us = g_array_new (FALSE, FALSE, sizeof (gint64));
    bench[i].latencies = g_array_new (FALSE, FALSE, sizeof (gdouble));
  }
  /* Wait for every handshake. */
  for (gint i = 0; i < clients; i++)
    while (ts_client_count (bench[i].c, 0) == 0 && !bench[i].c->closed)
      g_main_context_iteration (NULL, TRUE);

  for (gint i = 0; i < clients; i++)
    bench[i].t0 = g_get_monotonic_time ();
  end_send = g_get_monotonic_time ()
      + (gint64) ((n_pages - 2) * 0.02 * G_USEC_PER_SEC);
  end_all = end_send + 2 * G_USEC_PER_SEC; /* the last replies */
  while (g_get_monotonic_time () < end_all) {
    gint64 now = g_get_monotonic_time ();

    for (gint i = 0; i < clients; i++) {
      Bench *b = &bench[i];
      /* Pages due by now: headers at once, then one every 20 ms. */
      guint due = MIN (n_pages, 2 + (guint) ((now - b->t0) / 20000) + 1);

      while (b->next < due && !b->c->closed) {
        GBytes *pg = pages->pdata[b->next];

        ts_client_send (b->c, 1, g_bytes_get_data (pg, NULL),
            g_bytes_get_size (pg));
        g_array_append_val (b->sent_us, now);
        b->next++;
      }
    }
    {
      gsize rss = ts_server_rss_kb (&server);

      rss_peak = MAX (rss_peak, rss);
    }
    while (g_main_context_pending (NULL))
      g_main_context_iteration (NULL, FALSE);
    g_usleep (2000);
  }

  for (gint i = 0; i < clients; i++) {
    Bench *b = &bench[i];
    guint64 in_g = g_array_index (page_granule, guint64, n_pages - 1);

    frames_in += in_g / 3840; /* 80 ms at 48 kHz */
    frames_out += b->out_granule / 3840;
    g_array_append_vals (all, b->latencies->data, b->latencies->len);
    if (b->c->error)
      g_printerr ("client %d: server error: %s\n", i, b->c->error);
    ts_client_free (b->c, FALSE);
    g_array_unref (b->sent_us);
    g_array_unref (b->latencies);
  }
  g_array_sort (all, cmp_double);
  if (all->len) {
    gdouble *v = (gdouble *) all->data;
    guint n = all->len;

    printf ("clients %d, %.1f s of audio each, moshilm threads %d\n", clients,
        (n_pages - 2) * 0.02, threads);
    printf ("  reply latency per 20 ms page (ms): p50 %.0f  p90 %.0f  "
            "p99 %.0f  max %.0f  (%u pages)\n",
        v[n / 2], v[n * 9 / 10], v[MIN (n - 1, n * 99 / 100)], v[n - 1], n);
    /* At the end 3 frames per session are still in the pipeline (no EOS
     * is sent): moshilm's one-frame delay, the partial frame in mimienc
     * and the Opus pre-skip (312 samples at 48 kHz) counted in the input
     * granule. Anything beyond those did not come back in time. */
    printf ("  80 ms frames: %" G_GUINT64_FORMAT " in, %" G_GUINT64_FORMAT
            " out; %" G_GINT64_FORMAT
            " late or dropped (beyond the 3 per session in flight)\n",
        frames_in, frames_out,
        MAX ((gint64) 0,
            (gint64) frames_in - (gint64) frames_out - clients * 3));
    printf ("  server peak RSS %.1f MiB\n", rss_peak / 1024.0);
  } else {
    printf ("clients %d: no audio came back\n", clients);
  }
  g_free (bench);
  g_array_unref (all);
  g_array_unref (page_granule);
  g_ptr_array_unref (pages);
  if (ts_server_stop (&server) != 0) {
    g_printerr ("the server did not exit cleanly\n");
    status = 1;
  }
  g_free (a_sessions);
  g_free (a_threads);
  g_free (a_model);
  g_free (a_mimi);
  return status;
}
