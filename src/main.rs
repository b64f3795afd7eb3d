fn main() -> std::process::ExitCode {
    restore_sigpipe();
    nnc::cli::main()
}

/// Rust ignores SIGPIPE, so `nnc ir FILE | head` would panic on the first write after `head`
/// exits. Restore the default action: the process ends quietly, like any Unix filter.
fn restore_sigpipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: setting a signal's disposition to the default action is async-signal-safe
        // and happens before any other thread exists.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}
