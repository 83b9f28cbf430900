//! A worker with tasks of the tests' own, to test the library API and faults: it knows
//! corepool's built-in tasks and those of `corepool_tests::tasks`.

fn main() -> std::process::ExitCode {
    corepool_worker::main_with(corepool_tests::tasks::registry())
}
