// Reference TCP proxies for bench/userspace.ts: what a userspace proxy written in C gets out of this
// machine, so the userspace mode's bulk figure can be read against the best a process in the data path
// can do, not only against the kernel modes. Not part of the product; built by the benchmark with `cc`.
//
//   reference-proxy copy|threads|splice LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT BUFFER_BYTES
//
// Every accepted connection gets a connection to the upstream and one thread per direction:
//   copy     read() into one buffer, write() it out, repeat (what the userspace mode does, minus Node)
//   threads  a reader and a writer thread per direction with four buffers between them, so reading the
//            next chunk overlaps writing the last one (one stream spread over two cores)
//   splice   splice() through a pipe: the bytes never enter the process (no copy in, no copy out)
// Prints "ready" once listening. Runs until killed.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { COPY, THREADS, SPLICE };
static enum mode mode;
static size_t buffer_bytes;
static struct sockaddr_in upstream;

struct direction {
  int in, out;
};

static int write_all(int fd, const char *b, ssize_t n) {
  for (ssize_t done = 0; done < n;) {
    ssize_t m = write(fd, b + done, n - done);
    if (m <= 0) return -1;
    done += m;
  }
  return 0;
}

static void copy_loop(struct direction *d) {
  char *b = malloc(buffer_bytes);
  for (;;) {
    ssize_t n = read(d->in, b, buffer_bytes);
    if (n <= 0 || write_all(d->out, b, n) < 0) break;
  }
  free(b);
}

static void splice_loop(struct direction *d) {
  int p[2];
  if (pipe(p) < 0) return;
  fcntl(p[1], F_SETPIPE_SZ, (int)buffer_bytes);
  for (;;) {
    ssize_t n = splice(d->in, NULL, p[1], NULL, buffer_bytes, SPLICE_F_MOVE);
    if (n <= 0) break;
    while (n > 0) {
      ssize_t m = splice(p[0], NULL, d->out, NULL, n, SPLICE_F_MOVE);
      if (m <= 0) goto done;
      n -= m;
    }
  }
done:
  close(p[0]);
  close(p[1]);
}

// threads: chunks handed from the reader (this direction's thread) to a writer thread.
#define CHUNKS 4
struct ring {
  struct direction *d;
  char *chunk[CHUNKS];
  ssize_t length[CHUNKS];
  unsigned long read_count, written_count;
  int failed;
  pthread_mutex_t lock;
  pthread_cond_t changed;
};

static void *ring_writer(void *arg) {
  struct ring *r = arg;
  for (;;) {
    pthread_mutex_lock(&r->lock);
    while (r->written_count == r->read_count) pthread_cond_wait(&r->changed, &r->lock);
    int i = r->written_count % CHUNKS;
    pthread_mutex_unlock(&r->lock);
    if (r->length[i] <= 0) break;
    if (write_all(r->d->out, r->chunk[i], r->length[i]) < 0) {
      // The reader stops too: it may wait for a free chunk, or in read(), which shutting `in` ends.
      pthread_mutex_lock(&r->lock);
      r->failed = 1;
      pthread_cond_broadcast(&r->changed);
      pthread_mutex_unlock(&r->lock);
      shutdown(r->d->in, SHUT_RD);
      break;
    }
    pthread_mutex_lock(&r->lock);
    r->written_count++;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->lock);
  }
  return NULL;
}

static void threads_loop(struct direction *d) {
  struct ring r = {.d = d};
  pthread_mutex_init(&r.lock, NULL);
  pthread_cond_init(&r.changed, NULL);
  for (int i = 0; i < CHUNKS; i++) r.chunk[i] = malloc(buffer_bytes);
  pthread_t writer;
  pthread_create(&writer, NULL, ring_writer, &r);
  for (;;) {
    pthread_mutex_lock(&r.lock);
    while (!r.failed && r.read_count - r.written_count >= CHUNKS) pthread_cond_wait(&r.changed, &r.lock);
    int i = r.read_count % CHUNKS, failed = r.failed;
    pthread_mutex_unlock(&r.lock);
    if (failed) break;
    ssize_t n = read(d->in, r.chunk[i], buffer_bytes);
    pthread_mutex_lock(&r.lock);
    r.length[i] = n;
    r.read_count++;
    pthread_cond_broadcast(&r.changed);
    pthread_mutex_unlock(&r.lock);
    if (n <= 0) break;
  }
  pthread_join(writer, NULL);
  for (int i = 0; i < CHUNKS; i++) free(r.chunk[i]);
}

static void *one_direction(void *arg) {
  struct direction *d = arg;
  if (mode == COPY) copy_loop(d);
  else if (mode == SPLICE) splice_loop(d);
  else threads_loop(d);
  shutdown(d->out, SHUT_WR);
  return NULL;
}

static void *connection(void *arg) {
  int client = (int)(long)arg;
  int server = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(server, (struct sockaddr *)&upstream, sizeof upstream) == 0) {
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct direction up = {client, server}, down = {server, client};
    pthread_t t;
    pthread_create(&t, NULL, one_direction, &down);
    one_direction(&up);
    pthread_join(t, NULL);
  }
  close(client);
  close(server);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s copy|threads|splice LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT BUFFER_BYTES\n", argv[0]);
    return 2;
  }
  mode = !strcmp(argv[1], "splice") ? SPLICE : !strcmp(argv[1], "threads") ? THREADS : COPY;
  buffer_bytes = strtoul(argv[5], NULL, 10);
  upstream.sin_family = AF_INET;
  upstream.sin_port = htons(atoi(argv[4]));
  if (inet_pton(AF_INET, argv[3], &upstream.sin_addr) != 1) return 2;
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (bind(listener, (struct sockaddr *)&any, sizeof any) < 0 || listen(listener, 128) < 0) {
    perror("listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int client = accept(listener, NULL, NULL);
    if (client < 0) continue;
    pthread_t t;
    pthread_create(&t, NULL, connection, (void *)(long)client);
    pthread_detach(t);
  }
}
