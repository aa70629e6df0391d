// LD_PRELOAD library for benchmarks/cpu_speed.py --emulate-avx2: the process's CPUID reports an
// AVX2-only x86 CPU (no AVX-512, AVX-VNNI, AVX512-BF16, AMX), so that every library's own CPU
// dispatch (PyTorch's cpuinfo, oneDNN, ONNX Runtime's MLAS, which has no switch of its own) picks
// its AVX2 kernels. It uses Linux CPUID faulting (arch_prctl ARCH_SET_CPUID, inherited by threads):
// each CPUID traps, the handler runs the real instruction and clears the feature bits. Where the
// CPU or kernel has no CPUID faulting, nothing is masked and GEOCOMPRESS_CPUID_MASKED stays unset.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <asm/prctl.h>

static long set_cpuid(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)si;
    greg_t *g = ((ucontext_t *)ctx)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (!(ip[0] == 0x0f && ip[1] == 0xa2)) {  /* not CPUID: a real fault */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        /* AVX512 F DQ IFMA PF ER CD BW VL */
        b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
               (1u << 30) | (1u << 31));
        /* AVX512 VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
        c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* AVX512 4VNNIW 4FMAPS VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8 */
        d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
               (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        a &= ~((1u << 4) | (1u << 5) | (1u << 21));  /* AVX-VNNI, AVX512-BF16, AMX-FP16 */
    }
    g[REG_RAX] = a; g[REG_RBX] = b; g[REG_RCX] = c; g[REG_RDX] = d;
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_cpuid(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    if (sigaction(SIGSEGV, &sa, 0) == 0 && set_cpuid(0) == 0)
        setenv("GEOCOMPRESS_CPUID_MASKED", "1", 1);
}
