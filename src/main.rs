fn main() -> std::process::ExitCode {
    gan_engine::cpu::heap::retain_freed_memory();
    gan_engine::cli::main()
}
