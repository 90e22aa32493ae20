/* moshi-picture-decoder: decodes one picture for moshi-server, in a
 * process of its own (see ms_image_decode_async in server/image.h).
 *
 * Reads an image file on standard input and writes the RGB picture, or
 * the error, on standard output (ms_image_serve).  The server starts one
 * per picture, so whatever a system decoder does wrong with hostile bytes
 * (a leak, a crash, a hang, a huge allocation) ends with this process.
 * Not meant to be run by hand. */
#include "server/image.h"

#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* Limits of the process: the largest picture accepted (8192 x 8192) needs
 * ~0.5 GB decoded and converted; a decoder that wants far more, or spins,
 * is stopped by the kernel.  (AddressSanitizer reserves terabytes of
 * address space, so no address-space limit under it.) */
static void
limit_process (void)
{
  struct rlimit cpu = { 60, 61 };

  setrlimit (RLIMIT_CPU, &cpu);
#ifndef UNDER_ASAN
  struct rlimit as = { (rlim_t) 4 << 30, (rlim_t) 4 << 30 };

  setrlimit (RLIMIT_AS, &as);
#endif
}

int
main (int argc, char **argv)
{
  int status;

  if (argc > 1 || isatty (STDIN_FILENO)) {
    fprintf (stderr,
        "%s: decodes the image file on its standard input for moshi-server; "
        "it takes no arguments\n",
        MS_PICTURE_DECODER_NAME);
    return 2;
  }
  limit_process ();
  gst_init (NULL, NULL);
  status = ms_image_serve (STDIN_FILENO, STDOUT_FILENO);
  /* The process ends here: the kernel takes back everything, including
   * what a decoder leaked, without GStreamer's slow teardown (nor the
   * leak report of a sanitizer build about GStreamer's own leaks). */
  _exit (status);
}
