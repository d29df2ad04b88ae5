//! A network namespace of the test's own, for what needs a fixed port (127.0.0.1:443) while
//! other tests run on the same machine: `unshare --net` with loopback up, held by a sleeping
//! process, commands run inside with `nsenter`. Needs root, as the containerd tests do.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Netns {
    holder: Child,
}

impl Netns {
    pub fn new() -> Netns {
        let mut holder = Command::new("unshare")
            .args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec sleep 1000000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) is installed by scripts/test");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let netns = Netns { holder };
        assert_eq!(
            line.trim(),
            "up",
            "a network namespace of the test's own could not be made (not root?)"
        );
        netns
    }

    /// `cmd` (program, arguments, environment and directory) run inside the namespace.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut inside = Command::new("nsenter");
        inside
            .args(["-t", &self.holder.id().to_string(), "-n", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inside.env(k, v),
                None => inside.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inside.current_dir(dir);
        }
        inside.stdin(Stdio::null());
        inside
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
