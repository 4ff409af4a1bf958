/* ABBA: with no argument, one thread takes lock_a then lock_b, another (after the first ended)
 * lock_b then lock_a: never deadlocks, but could. With "ab" or "ba", only that order, in the main
 * thread: two processes (two hosts) between them make the cycle. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

static void *take_ab(void *arg) {
    pthread_mutex_lock(&lock_a);
    pthread_mutex_lock(&lock_b);
    pthread_mutex_unlock(&lock_b);
    pthread_mutex_unlock(&lock_a);
    return arg;
}

static void *take_ba(void *arg) {
    pthread_mutex_lock(&lock_b);
    pthread_mutex_lock(&lock_a);
    pthread_mutex_unlock(&lock_a);
    pthread_mutex_unlock(&lock_b);
    return arg;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        (strcmp(argv[1], "ab") == 0 ? take_ab : take_ba)(NULL);
        return 0;
    }
    pthread_t t;
    pthread_create(&t, NULL, take_ab, NULL);
    pthread_join(t, NULL);
    pthread_create(&t, NULL, take_ba, NULL);
    pthread_join(t, NULL);
    return 0;
}
