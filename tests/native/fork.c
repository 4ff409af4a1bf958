/* fork: the parent takes outer then inner; a pthread_atfork prepare handler takes guard and the
 * parent and child handlers release it (the child releases a lock its thread took before it
 * existed); the child takes outer then inner too, and the parent waits for it. No finding. */
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t guard = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t outer = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t inner = PTHREAD_MUTEX_INITIALIZER;

static void prepare(void) { pthread_mutex_lock(&guard); }
static void release(void) { pthread_mutex_unlock(&guard); }

static void nest(void) {
    pthread_mutex_lock(&outer);
    pthread_mutex_lock(&inner);
    pthread_mutex_unlock(&inner);
    pthread_mutex_unlock(&outer);
}

int main(void) {
    pthread_atfork(prepare, release, release);
    nest();
    pthread_mutex_lock(&outer);     /* held across the fork: the child holds it too */
    pid_t pid = fork();
    if (pid == 0) {
        pthread_mutex_lock(&inner);
        pthread_mutex_unlock(&inner);
        pthread_mutex_unlock(&outer);
        nest();
        _exit(0);
    }
    pthread_mutex_unlock(&outer);
    int status = 0;
    waitpid(pid, &status, 0);
    nest();
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 3;
}
