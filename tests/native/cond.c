#define _GNU_SOURCE
/* A producer and a consumer on a condition variable (pthread_cond_wait, timedwait and clockwait release
 * and retake the mutex), each also taking stats inside queue. No finding. */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t queue = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t stats = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static int items, taken;

static void *consumer(void *arg) {
    for (int i = 0; i < 50; i++) {
        pthread_mutex_lock(&queue);
        while (items == 0) {
            if (i % 3 == 1) {
                pthread_cond_wait(&ready, &queue);
            } else if (i % 3 == 2) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += 1;
                pthread_cond_clockwait(&ready, &queue, CLOCK_MONOTONIC, &ts);
            } else {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 200000;
                if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
                pthread_cond_timedwait(&ready, &queue, &ts);
            }
        }
        items--;
        pthread_mutex_lock(&stats);
        taken++;
        pthread_mutex_unlock(&stats);
        pthread_mutex_unlock(&queue);
    }
    return arg;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, consumer, NULL);
    for (int i = 0; i < 50; i++) {
        usleep(300); /* the consumer gets to wait */
        pthread_mutex_lock(&queue);
        items++;
        pthread_mutex_lock(&stats);
        pthread_mutex_unlock(&stats);
        pthread_cond_signal(&ready);
        pthread_mutex_unlock(&queue);
    }
    pthread_join(t, NULL);
    return taken == 50 ? 0 : 3;
}
