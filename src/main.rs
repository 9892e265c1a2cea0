fn main() -> std::process::ExitCode {
    // A closed stdout (`gan-engine info | head -1`) ends the process quietly, as it does any Unix filter,
    // instead of surfacing as a failed print.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    gan_engine::cpu::heap::retain_freed_memory();
    gan_engine::cli::main()
}
