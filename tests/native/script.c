#define _GNU_SOURCE
/* Runs a script of lock operations given as arguments, in one thread, and prints each one's
 * return code: "L0" lock mutex 0, "T0" trylock, "D0" timedlock (1 ms), "U0" unlock; "R0" rdlock
 * rwlock 0, "W0" wrlock, "Y0" tryrdlock, "Z0" trywrlock, "E0" timedrdlock, "F0" timedwrlock,
 * "V0" rwlock unlock; "C0" clocklock, "G0" clockrdlock, "H0" clockwrlock (CLOCK_MONOTONIC, 1 ms). Mutexes m0..m3 and rwlocks r0, r1 (glibc's default: readers go first) and
 * r2 (writers go first: PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP) are globals. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

pthread_mutex_t m0 = PTHREAD_MUTEX_INITIALIZER, m1 = PTHREAD_MUTEX_INITIALIZER,
                m2 = PTHREAD_MUTEX_INITIALIZER, m3 = PTHREAD_MUTEX_INITIALIZER;
pthread_rwlock_t r0 = PTHREAD_RWLOCK_INITIALIZER, r1 = PTHREAD_RWLOCK_INITIALIZER,
                 r2 = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static pthread_mutex_t *mutexes[] = {&m0, &m1, &m2, &m3};
static pthread_rwlock_t *rwlocks[] = {&r0, &r1, &r2};

static struct timespec soon_on(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_nsec += 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

static struct timespec soon(void) { return soon_on(CLOCK_REALTIME); }

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char op = argv[i][0];
        int k = argv[i][1] - '0', rc = -1;
        pthread_mutex_t *m = mutexes[k & 3];
        pthread_rwlock_t *r = rwlocks[k % 3];
        struct timespec ts = soon(), mono = soon_on(CLOCK_MONOTONIC);
        switch (op) {
        case 'L': rc = pthread_mutex_lock(m); break;
        case 'T': rc = pthread_mutex_trylock(m); break;
        case 'D': rc = pthread_mutex_timedlock(m, &ts); break;
        case 'U': rc = pthread_mutex_unlock(m); break;
        case 'R': rc = pthread_rwlock_rdlock(r); break;
        case 'W': rc = pthread_rwlock_wrlock(r); break;
        case 'Y': rc = pthread_rwlock_tryrdlock(r); break;
        case 'Z': rc = pthread_rwlock_trywrlock(r); break;
        case 'E': rc = pthread_rwlock_timedrdlock(r, &ts); break;
        case 'F': rc = pthread_rwlock_timedwrlock(r, &ts); break;
        case 'V': rc = pthread_rwlock_unlock(r); break;
        case 'C': rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &mono); break;
        case 'G': rc = pthread_rwlock_clockrdlock(r, CLOCK_MONOTONIC, &mono); break;
        case 'H': rc = pthread_rwlock_clockwrlock(r, CLOCK_MONOTONIC, &mono); break;
        }
        printf("%d\n", rc);
    }
    return 0;
}
