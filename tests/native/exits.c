/* Takes lock_a and lock_b (in a second thread) and then ends the process without unlocking:
 * "exit" calls exit(0) from main while the other thread still holds both, "kill" raises SIGKILL,
 * "abort" calls abort(). */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
static int holding;

static void *hold(void *arg) {
    pthread_mutex_lock(&lock_a);
    pthread_mutex_lock(&lock_b);
    __atomic_store_n(&holding, 1, __ATOMIC_RELEASE);
    for (;;)
        pause();
    return arg;
}

int main(int argc, char **argv) {
    pthread_t t;
    pthread_create(&t, NULL, hold, NULL);
    while (!__atomic_load_n(&holding, __ATOMIC_ACQUIRE))
        usleep(1000);
    const char *how = argc > 1 ? argv[1] : "exit";
    if (strcmp(how, "kill") == 0)
        raise(SIGKILL);
    if (strcmp(how, "abort") == 0)
        abort();
    exit(0);
}
