//! A test hook: kill the process at a named point of a write.

/// The environment variable that names the point at which [`kill_point`] kills the process.
pub const KILL_AT: &str = "SHEAR_TEST_KILL_AT";

/// Test hook, not an option: when the environment variable [`KILL_AT`] equals the name `point`
/// returns, the process sends itself SIGKILL here. It lets tests kill a run at an exact point of
/// a write (before or after a rename) instead of after a sleep that may land anywhere
/// (docs/algorithm.md §9).
///
/// With the variable unset it returns at once without calling `point`, so a name built with
/// `format!` costs nothing in a normal run.
pub fn kill_point(point: impl FnOnce() -> String) {
    let Some(wanted) = std::env::var_os(KILL_AT) else {
        return;
    };
    if wanted == *point() {
        kill_self();
    }
}

fn kill_self() -> ! {
    // SIGKILL, not a panic or an exit: nothing of this process may run after the point (no
    // destructor removing a temporary, no buffered write flushed), as after a power loss or an
    // out-of-memory kill. A signal a process sends itself is delivered before `kill` returns.
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    // Not reached where the signal could be sent; elsewhere end as abruptly as std allows.
    std::process::abort()
}

/// Re-running one test of this test binary in a child process, for the tests that kill a
/// process or hold a lock in another one.
#[cfg(test)]
pub(crate) mod child {
    use std::process::Command;

    /// The environment variable that tells a test it runs as the child (its value is the
    /// test's own argument, e.g. a directory).
    pub const ROLE: &str = "SHEAR_IO_TEST_CHILD";

    /// A command running only the test `name` (its path below the crate, e.g.
    /// `hooks::tests::x`) of this binary, as the child, with `arg` in [`ROLE`].
    pub fn test(name: &str, arg: &str) -> Command {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(ROLE, arg)
            .env_remove(super::KILL_AT);
        cmd
    }

    /// This test's argument when it runs as the child.
    pub fn arg() -> Option<String> {
        std::env::var(ROLE).ok()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const SURVIVED: &str = "kill point passed";
    const NAME: &str = "hooks::tests::kill_point_kills_only_at_the_named_point";

    #[test]
    fn kill_point_kills_only_at_the_named_point() {
        if let Some(case) = child::arg() {
            let mut called = false;
            kill_point(|| {
                called = true;
                "here".to_string()
            });
            // Unset, the name is not even built.
            assert_eq!(
                called,
                case != "unset",
                "closure called: {called}, case {case}"
            );
            println!("{SURVIVED}");
            return;
        }
        let run = |case: &str, at: Option<&str>| {
            let mut cmd = child::test(NAME, case);
            if let Some(at) = at {
                cmd.env(KILL_AT, at);
            }
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status, stdout)
        };
        let (status, stdout) = run("unset", None);
        assert!(status.success(), "{status:?}: {stdout}");
        assert!(stdout.contains(SURVIVED), "{stdout}");
        let (status, stdout) = run("other", Some("elsewhere"));
        assert!(status.success(), "{status:?}: {stdout}");
        assert!(stdout.contains(SURVIVED), "{stdout}");
        let (status, stdout) = run("named", Some("here"));
        assert_eq!(status.signal(), Some(9), "{status:?}: {stdout}");
        assert!(!stdout.contains(SURVIVED), "{stdout}");
    }
}
