/* lockloop PAIRS [THREADS] [KIND]: each thread takes and releases its own lock PAIRS times
 * (KIND: mutex, nested (two mutexes, outer then inner: two pairs an iteration), rdlock);
 * prints the best thread's ns per lock/unlock pair, measured with CLOCK_MONOTONIC after one
 * untimed pair (what a thread's first lock costs a tracer, e.g. its ring, is not the hot path). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXT 16
static pthread_mutex_t outer[MAXT], inner[MAXT];
static pthread_rwlock_t rw[MAXT];
static long pairs;
static const char *kind = "mutex";
static double ns_per_pair[MAXT];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *run(void *arg) {
    long t = (long)arg;
    pthread_mutex_lock(&outer[t]);
    pthread_mutex_unlock(&outer[t]);
    double start = now();
    if (strcmp(kind, "nested") == 0) {
        for (long i = 0; i < pairs / 2; i++) {
            pthread_mutex_lock(&outer[t]);
            pthread_mutex_lock(&inner[t]);
            pthread_mutex_unlock(&inner[t]);
            pthread_mutex_unlock(&outer[t]);
        }
    } else if (strcmp(kind, "rdlock") == 0) {
        for (long i = 0; i < pairs; i++) {
            pthread_rwlock_rdlock(&rw[t]);
            pthread_rwlock_unlock(&rw[t]);
        }
    } else {
        for (long i = 0; i < pairs; i++) {
            pthread_mutex_lock(&outer[t]);
            pthread_mutex_unlock(&outer[t]);
        }
    }
    ns_per_pair[t] = (now() - start) / (double)pairs;
    return NULL;
}

int main(int argc, char **argv) {
    pairs = argc > 1 ? atol(argv[1]) : 1000000;
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (argc > 3)
        kind = argv[3];
    if (threads < 1 || threads > MAXT)
        return 2;
    for (int t = 0; t < MAXT; t++) {
        pthread_mutex_init(&outer[t], NULL);
        pthread_mutex_init(&inner[t], NULL);
        pthread_rwlock_init(&rw[t], NULL);
    }
    pthread_t tid[MAXT];
    for (long t = 0; t < threads; t++)
        pthread_create(&tid[t], NULL, run, (void *)t);
    double best = 1e30;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        if (ns_per_pair[t] < best)
            best = ns_per_pair[t];
    }
    printf("%.2f\n", best);
    return 0;
}
