/* Lock classes: two accounts made by account_new (pthread_mutex_init at one call site: one
 * class; kept out of line, as each inlined copy would be a call site of its own), a heap mutex set up by an initializer (no init call: its first acquisition's site),
 * a recursive mutex taken twice (recorded once), and the static big_lock. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

struct account {
    pthread_mutex_t lock;
    long balance;
};

static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) static struct account *account_new(void) {
    struct account *a = calloc(1, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

int main(void) {
    struct account *x = account_new(), *y = account_new();
    pthread_mutex_t *plain = malloc(sizeof *plain);
    *plain = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_t rec;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&rec, &attr);

    pthread_mutex_lock(&big_lock);
    pthread_mutex_lock(&x->lock);
    pthread_mutex_unlock(&x->lock);
    pthread_mutex_lock(&y->lock);
    pthread_mutex_unlock(&y->lock);
    pthread_mutex_lock(plain);
    pthread_mutex_unlock(plain);
    pthread_mutex_lock(&rec);
    pthread_mutex_lock(&rec);
    pthread_mutex_unlock(&rec);
    pthread_mutex_unlock(&rec);
    pthread_mutex_unlock(&big_lock);
    pthread_mutex_destroy(&x->lock);
    pthread_mutex_destroy(&y->lock);
    free(x);
    free(y);
    free(plain);
    return 0;
}
