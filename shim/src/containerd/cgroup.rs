//! Cgroups: each container's `linux.cgroupsPath` is created with the spec's memory and CPU
//! limits written into it (cgroup v1 and v2), and this process joins one of them, so the
//! guests it runs are accounted and limited as a container's processes would be.
//!
//! The guests run on threads of this process. For memory (and the other controllers that
//! count a whole process) the process sits in one cgroup: the first container's (in a pod, the
//! sandbox's, under the pod's cgroup that the kubelet limits), then another's of the group when
//! that one is deleted. Each guest's linear memory is also capped by the runner at its own
//! container's memory limit.
//!
//! CPU is counted per thread: with cgroup v1 only a guest's own threads enter its container's
//! `cpu` and `cpuacct` cgroups ([`Cgroup::enter_thread`]), and the shim's control threads (the
//! task service, the epoch ticker) stay where the shim started, so a kill or a delete never
//! waits behind a guest that uses up its container's CPU quota. cgroup v2 places a whole
//! process in one cgroup, but threads of it in the cgroups of a threaded subtree: the
//! container's cgroup keeps the memory limit and gets two threaded children, `shim` (where
//! the process's threads go when it joins) and `guests` (the CPU limit, where a guest's
//! threads go), so there too the shim's threads never share a guest's quota. Threads move
//! only within the subtree of the cgroup the process is in: in a shim shared by several
//! containers (a pod), only the guests of the container whose cgroup it joined take their
//! own CPU limit; the others run under the pod's.
//!
//! The path is the pod author's input only through the CRI plugin, but it is still checked:
//! a path with `..`, or a systemd-style `slice:prefix:name` with a `/` in a part, is refused.

use std::fs;
use std::path::{Component, Path, PathBuf};

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::MessageField;

use super::error::CgroupError;

/// The cgroup filesystem.
pub(crate) const ROOT: &str = "/sys/fs/cgroup";

/// The threaded children of a container's cgroup (v2): the shim's threads, and the guests'.
const SHIM_THREADS: &str = "shim";
const GUEST_THREADS: &str = "guests";

/// The v1 controllers that account for a guest; cpuset would need cpus and mems set before
/// anything can join it, and named hierarchies are systemd's.
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "blkio"];

/// What the spec's `linux.resources` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    /// `memory.limit`, bytes.
    pub(crate) memory_limit: Option<i64>,
    /// `cpu.quota`, microseconds per period.
    pub(crate) cpu_quota: Option<i64>,
    /// `cpu.period`, microseconds.
    pub(crate) cpu_period: Option<u64>,
    /// `cpu.shares`, cgroup v1's relative weight (2 to 262144).
    pub(crate) cpu_shares: Option<u64>,
}

impl Resources {
    /// The limits of a spec.
    pub(crate) fn of(spec: &oci_spec::runtime::Spec) -> Resources {
        let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
            return Resources::default();
        };
        let memory = r.memory().as_ref();
        let cpu = r.cpu().as_ref();
        Resources {
            memory_limit: memory.and_then(|m| m.limit()).filter(|l| *l > 0),
            cpu_quota: cpu.and_then(|c| c.quota()).filter(|q| *q > 0),
            cpu_period: cpu.and_then(|c| c.period()).filter(|p| *p > 0),
            cpu_shares: cpu.and_then(|c| c.shares()).filter(|s| *s > 0),
        }
    }
}

/// The cgroup path of a spec's `linux.cgroupsPath`, relative to each hierarchy's root.
///
/// `/a/b` (cgroupfs) is taken as is; `slice:prefix:name` (what the CRI plugin sends with the
/// systemd driver) becomes `/parent.slice/.../slice/prefix-name.scope`, as runc expands it.
pub(crate) fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let refuse = |why: &'static str| CgroupError::Refused {
        path: cgroups_path.to_owned(),
        why,
    };
    let path = match cgroups_path.split(':').collect::<Vec<_>>()[..] {
        [single] => PathBuf::from(single),
        [slice, prefix, name] => {
            for part in [slice, prefix, name] {
                if part.contains('/') || part == ".." || part == "." {
                    return Err(refuse("a systemd path's parts are names, not paths"));
                }
            }
            let mut path = expand_slice(if slice.is_empty() {
                "system.slice"
            } else {
                slice
            })
            .ok_or_else(|| refuse("not a valid systemd slice name"))?;
            path.push(if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            });
            path
        }
        _ => return Err(refuse("expected /a/b or slice:prefix:name")),
    };
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(refuse("it leaves the cgroup root"));
            }
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(refuse("it names the cgroup root itself"));
    }
    Ok(relative)
}

/// `a-b-c.slice` -> `a.slice/a-b.slice/a-b-c.slice`, as systemd nests slices.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let name = slice.strip_suffix(".slice")?;
    if name.is_empty() || name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return None;
    }
    if name == "-" {
        return Some(PathBuf::new());
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Some(path)
}

/// A container's cgroup: its directory in each hierarchy, and what this shim created there.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// Each hierarchy, the directory in it, and the directories this shim removes when the
    /// container goes (outermost first): those it created, and the container's own.
    dirs: Vec<(PathBuf, PathBuf, Vec<PathBuf>)>,
    /// Whether the hierarchy is the unified one (cgroup v2).
    v2: bool,
    /// With cgroup v2 and a CPU limit: the threaded children the process's threads are
    /// sorted into.
    threads: Option<Threads>,
}

/// A v2 container cgroup's threaded children: `shim`, without a CPU limit, and `guests`,
/// with the container's.
#[derive(Debug)]
struct Threads {
    shim: PathBuf,
    guests: PathBuf,
}

impl Threads {
    /// Makes `dir`'s threaded children (`dir` becomes a threaded domain), and enables the
    /// cpu controller for them when `cpu` is set.
    fn make(dir: &Path, cpu: bool) -> std::io::Result<Threads> {
        let threads = Threads {
            shim: dir.join(SHIM_THREADS),
            guests: dir.join(GUEST_THREADS),
        };
        for child in [&threads.shim, &threads.guests] {
            match fs::create_dir(child) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            fs::write(child.join("cgroup.type"), "threaded")?;
        }
        if cpu {
            fs::write(dir.join("cgroup.subtree_control"), "+cpu")?;
        }
        Ok(threads)
    }

    /// Moves every thread of this process into `shim` (after the process joined the
    /// threaded domain, where they all land).
    fn settle_shim(&self) {
        let Ok(tasks) = fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let tid = task.file_name();
            if let Err(e) = fs::write(self.shim.join("cgroup.threads"), tid.as_encoded_bytes()) {
                // A thread that ended in between.
                if Path::new("/proc/self/task").join(&tid).exists() {
                    tracing::warn!(dir = %self.shim.display(), error = %e, "cannot move a shim thread out of the guests' CPU limit");
                }
            }
        }
    }

    /// Removes both children (empty by then).
    fn remove(&self) {
        let _ = fs::remove_dir(&self.guests);
        let _ = fs::remove_dir(&self.shim);
    }
}

/// Whether a v1 hierarchy places single threads: a guest's threads go into its container's
/// cgroup there, and the shim's own threads stay out.
fn per_thread(v2: bool, hierarchy: &Path) -> bool {
    !v2 && hierarchy
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.split(',').any(|c| c == "cpu" || c == "cpuacct"))
}

/// Where this process's threads are in a v1 hierarchy (`/proc/self/cgroup`): the cgroup a
/// guest's threads return to.
fn home(hierarchy: &Path) -> Option<PathBuf> {
    let name = hierarchy.file_name()?.to_str()?;
    let wanted: Vec<&str> = name.split(',').collect();
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let controllers: Vec<&str> = controllers.split(',').collect();
        wanted
            .iter()
            .all(|w| controllers.contains(w))
            .then(|| hierarchy.join(path.trim_start_matches('/')))
    })
}

/// The calling thread's id, as the `tasks` files take it.
fn this_thread() -> String {
    rustix::thread::gettid().as_raw_nonzero().get().to_string()
}

/// The hierarchies under `root`: the unified one (v2), or each v1 controller's.
fn hierarchies(root: &Path) -> (bool, Vec<PathBuf>) {
    if root.join("cgroup.controllers").exists() {
        return (true, vec![root.to_owned()]);
    }
    let v1 = V1_CONTROLLERS
        .iter()
        .map(|c| root.join(c))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    (false, v1)
}

impl Cgroup {
    /// Creates the cgroup `relative` under `root` in every hierarchy and writes `resources`
    /// into it. A limit that cannot be written is an error: the container would run
    /// unlimited.
    pub(crate) fn create(
        root: &Path,
        relative: &Path,
        resources: Resources,
    ) -> Result<Cgroup, CgroupError> {
        let (v2, hierarchies) = hierarchies(root);
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            v2,
            threads: None,
        };
        for hierarchy in hierarchies {
            let dir = hierarchy.join(relative);
            // The container's own directory is removed with it even when it was there before
            // (left by a shim that died): its parents only when this shim made them.
            let mut created: Vec<PathBuf> = dir
                .ancestors()
                .skip(1)
                .take_while(|d| *d != hierarchy && !d.exists())
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            created.push(dir.clone());
            if let Err(e) = fs::create_dir_all(&dir) {
                remove(&created);
                cgroup.remove();
                return Err(CgroupError::Create { dir, cause: e });
            }
            cgroup.dirs.push((hierarchy.clone(), dir.clone(), created));
            if v2 {
                enable_controllers(&hierarchy, &dir);
                if resources.limits_cpu() {
                    // The CPU limit goes on the guests' threaded child, so that the shim's
                    // threads are outside it; where the kernel will not have it, on the
                    // container's cgroup, as before (a limit is never dropped).
                    match Threads::make(&dir, true) {
                        Ok(threads) => cgroup.threads = Some(threads),
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the threaded cgroups that keep the shim's threads out of the guests' CPU limit; the limit covers the whole process");
                            Threads {
                                shim: dir.join(SHIM_THREADS),
                                guests: dir.join(GUEST_THREADS),
                            }
                            .remove();
                        }
                    }
                }
            }
            let writes = limit_files(v2, &hierarchy, resources);
            for (file, value) in writes {
                let target = match &cgroup.threads {
                    Some(threads) if file.starts_with("cpu.") => threads.guests.join(file),
                    _ => dir.join(file),
                };
                if let Err(e) = fs::write(&target, &value) {
                    cgroup.remove();
                    return Err(CgroupError::Limit {
                        file,
                        value,
                        dir: target.parent().unwrap_or(&dir).to_path_buf(),
                        cause: e,
                    });
                }
            }
        }
        Ok(cgroup)
    }

    /// The memory charged to the cgroup now, in bytes, if it has a memory controller.
    pub(crate) fn memory_usage(&self) -> Option<u64> {
        self.dirs.iter().find_map(|(hierarchy, dir, _)| {
            let file = if hierarchy.join("cgroup.controllers").exists() {
                dir.join("memory.current")
            } else if hierarchy.file_name()? == "memory" {
                dir.join("memory.usage_in_bytes")
            } else {
                return None;
            };
            fs::read_to_string(file).ok()?.trim().parse().ok()
        })
    }

    /// The cgroup's figures, in the form containerd and the CRI plugin read (cgroup v1's
    /// `Metrics`, whose fields v2's files fill too).
    pub(crate) fn metrics(&self) -> Metrics {
        let mut metrics = Metrics::new();
        let mut memory = MemoryStat::new();
        let mut cpu = CPUUsage::new();
        let mut pids = PidsStat::new();
        let read = |path: PathBuf| fs::read_to_string(path).unwrap_or_default();
        let number = |text: String| text.trim().parse::<u64>().unwrap_or(0);
        let fields = |text: String| -> Vec<(String, u64)> {
            text.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_owned(), v.trim().parse().ok()?))
                })
                .collect()
        };
        for (hierarchy, dir, _) in &self.dirs {
            if hierarchy.join("cgroup.controllers").exists() {
                let mut usage = MemoryEntry::new();
                usage.usage = number(read(dir.join("memory.current")));
                usage.limit = number(read(dir.join("memory.max")));
                memory.usage = MessageField::some(usage);
                for (k, v) in fields(read(dir.join("memory.stat"))) {
                    match k.as_str() {
                        "anon" => memory.rss = v,
                        "file" => memory.cache = v,
                        "inactive_file" => memory.total_inactive_file = v,
                        _ => {}
                    }
                }
                // The guests' threads alone, when they have a cgroup of their own.
                let cpu_dir = self.threads.as_ref().map_or(dir, |t| &t.guests);
                for (k, v) in fields(read(cpu_dir.join("cpu.stat"))) {
                    match k.as_str() {
                        "usage_usec" => cpu.total = v * 1000,
                        "user_usec" => cpu.user = v * 1000,
                        "system_usec" => cpu.kernel = v * 1000,
                        _ => {}
                    }
                }
                pids.current = number(read(dir.join("pids.current")));
                continue;
            }
            match hierarchy.file_name().and_then(|n| n.to_str()) {
                Some("memory") => {
                    let mut usage = MemoryEntry::new();
                    usage.usage = number(read(dir.join("memory.usage_in_bytes")));
                    usage.max = number(read(dir.join("memory.max_usage_in_bytes")));
                    usage.limit = number(read(dir.join("memory.limit_in_bytes")));
                    usage.failcnt = number(read(dir.join("memory.failcnt")));
                    memory.usage = MessageField::some(usage);
                    for (k, v) in fields(read(dir.join("memory.stat"))) {
                        match k.as_str() {
                            "rss" => memory.rss = v,
                            "cache" => memory.cache = v,
                            "total_rss" => memory.total_rss = v,
                            "total_cache" => memory.total_cache = v,
                            "total_inactive_file" => memory.total_inactive_file = v,
                            _ => {}
                        }
                    }
                }
                Some("cpuacct") => {
                    cpu.total = number(read(dir.join("cpuacct.usage")));
                    for (k, v) in fields(read(dir.join("cpuacct.stat"))) {
                        // USER_HZ ticks: 100 a second on Linux.
                        match k.as_str() {
                            "user" => cpu.user = v * 10_000_000,
                            "system" => cpu.kernel = v * 10_000_000,
                            _ => {}
                        }
                    }
                }
                Some("pids") => pids.current = number(read(dir.join("pids.current"))),
                _ => {}
            }
        }
        let mut cpu_stat = CPUStat::new();
        cpu_stat.usage = MessageField::some(cpu);
        metrics.cpu = MessageField::some(cpu_stat);
        metrics.memory = MessageField::some(memory);
        metrics.pids = MessageField::some(pids);
        metrics
    }

    /// Moves this whole process into the cgroup, in every hierarchy that counts processes
    /// (all of cgroup v2's; v1's but `cpu` and `cpuacct`, which take single threads).
    pub(crate) fn join(&self) {
        let pid = std::process::id().to_string();
        for (hierarchy, dir, _) in &self.dirs {
            if per_thread(self.v2, hierarchy) {
                continue;
            }
            if let Err(e) = fs::write(dir.join("cgroup.procs"), &pid) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot join cgroup");
                continue;
            }
            if let Some(threads) = &self.threads {
                threads.settle_shim();
            }
        }
    }

    /// Moves this process back to each hierarchy's root, where it counts processes.
    pub(crate) fn leave(&self) {
        let pid = std::process::id().to_string();
        for (hierarchy, _, _) in &self.dirs {
            if !per_thread(self.v2, hierarchy) {
                let _ = fs::write(hierarchy.join("cgroup.procs"), &pid);
            }
        }
    }

    /// Moves the calling thread (a guest's, before it runs any of the guest) into the cgroup
    /// where hierarchies take single threads; threads it starts are born there. Returns
    /// whether the cgroup's CPU figures count this thread alone (else the whole process's).
    pub(crate) fn enter_thread(&self) -> bool {
        let tid = this_thread();
        if let Some(threads) = &self.threads {
            return match fs::write(threads.guests.join("cgroup.threads"), &tid) {
                Ok(()) => true,
                Err(e) => {
                    // The process is in another container's cgroup (a pod's shared shim):
                    // a thread does not leave its process's threaded subtree.
                    tracing::debug!(dir = %threads.guests.display(), error = %e, "the guest's thread stays where the process is");
                    false
                }
            };
        }
        let mut entered = false;
        for (hierarchy, dir, _) in &self.dirs {
            if !per_thread(self.v2, hierarchy) {
                continue;
            }
            match fs::write(dir.join("tasks"), &tid) {
                Ok(()) => entered = true,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot move the guest's thread into its cgroup");
                }
            }
        }
        entered
    }

    /// Removes what [`Cgroup::create`] made, innermost first; one still in use stays, and so
    /// do its parents. Threads of this process still in it (a guest's runtime winding down)
    /// are moved back where the shim's threads are first.
    pub(crate) fn remove(&self) {
        for (hierarchy, dir, created) in &self.dirs {
            if per_thread(self.v2, hierarchy)
                && let Some(home) = home(hierarchy)
            {
                let tasks = fs::read_to_string(dir.join("tasks")).unwrap_or_default();
                for tid in tasks.lines() {
                    if Path::new(&format!("/proc/self/task/{tid}")).exists() {
                        let _ = fs::write(home.join("tasks"), tid);
                    }
                }
            }
            if let Some(threads) = &self.threads {
                threads.remove();
            }
            remove(created);
        }
    }
}

impl Resources {
    /// Whether a CPU limit or weight is asked for.
    fn limits_cpu(&self) -> bool {
        self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_shares.is_some()
    }
}

/// Removes the cgroup `relative` of a container whose shim died (what containerd's `delete`
/// of the shim asks), in every hierarchy under `root`: its own directory, never a parent. One
/// that still holds a process stays.
pub(crate) fn remove_leftover(root: &Path, relative: &Path) {
    let (_, hierarchies) = hierarchies(root);
    for hierarchy in hierarchies {
        let dir = hierarchy.join(relative);
        // A v2 cgroup's threaded children first.
        for child in [GUEST_THREADS, SHIM_THREADS] {
            let _ = fs::remove_dir(dir.join(child));
        }
        match fs::remove_dir(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed a dead shim's cgroup"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a dead shim's cgroup")
            }
        }
    }
}

/// The files and values that set `resources`, for one hierarchy.
fn limit_files(v2: bool, hierarchy: &Path, r: Resources) -> Vec<(&'static str, String)> {
    let controller = hierarchy.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut writes = Vec::new();
    if v2 {
        if let Some(limit) = r.memory_limit {
            writes.push(("memory.max", limit.to_string()));
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let quota = r.cpu_quota.map_or("max".to_owned(), |q| q.to_string());
            writes.push((
                "cpu.max",
                format!("{quota} {}", r.cpu_period.unwrap_or(100_000)),
            ));
        }
        if let Some(shares) = r.cpu_shares {
            writes.push(("cpu.weight", shares_to_weight(shares).to_string()));
        }
        return writes;
    }
    match controller {
        "memory" => {
            if let Some(limit) = r.memory_limit {
                writes.push(("memory.limit_in_bytes", limit.to_string()));
            }
        }
        "cpu" => {
            // The period first: a quota is checked against the period in force.
            if let Some(period) = r.cpu_period {
                writes.push(("cpu.cfs_period_us", period.to_string()));
            }
            if let Some(quota) = r.cpu_quota {
                writes.push(("cpu.cfs_quota_us", quota.to_string()));
            }
            if let Some(shares) = r.cpu_shares {
                writes.push(("cpu.shares", shares.to_string()));
            }
        }
        _ => {}
    }
    writes
}

/// cgroup v1 shares (2..262144) as a v2 weight (1..10000), by runc's formula.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Enables the memory and cpu controllers in `dir`'s ancestors below `root`, so that their
/// files exist in `dir`; best effort, as a parent may have them on already.
fn enable_controllers(root: &Path, dir: &Path) {
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(root))
        .collect();
    ancestors.reverse();
    for parent in ancestors {
        let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu");
    }
}

/// Removes `created` innermost first; one still in use stays, and so do its parents.
fn remove(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn cgroupfs_and_systemd_paths_stay_under_the_root() {
        assert_eq!(relative_path("/ns/c1").unwrap(), Path::new("ns/c1"));
        assert_eq!(
            relative_path("kubepods-burstable-pod1.slice:cri-containerd:abc").unwrap(),
            Path::new(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
            )
        );
        for hostile in [
            "/../../x",
            "/ns/../../x",
            "..",
            "/",
            "",
            "a.slice:../..:x",
            "a.slice:p:../x",
            "../a.slice:p:x",
            "a:b",
            "a.slice:p:x:y",
            "a--b.slice:p:x",
        ] {
            assert!(relative_path(hostile).is_err(), "{hostile:?} was accepted");
        }
    }

    #[test]
    fn limits_are_written_where_each_cgroup_version_keeps_them() {
        let r = Resources {
            memory_limit: Some(64 << 20),
            cpu_quota: Some(10_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(1024),
        };
        // v2: one hierarchy.
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let cg = Cgroup::create(root.path(), Path::new("pod/c1"), r).unwrap();
        let dir = root.path().join("pod/c1");
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            (64 << 20).to_string()
        );
        // The CPU limit is the guests' threaded child's; the shim's child has none.
        assert_eq!(
            fs::read_to_string(dir.join("guests/cpu.max")).unwrap(),
            "10000 100000"
        );
        assert_eq!(
            fs::read_to_string(dir.join("guests/cpu.weight")).unwrap(),
            "39"
        );
        for child in ["guests", "shim"] {
            assert_eq!(
                fs::read_to_string(dir.join(child).join("cgroup.type")).unwrap(),
                "threaded"
            );
        }
        assert!(!dir.join("cpu.max").exists());
        assert!(!dir.join("shim/cpu.max").exists());
        assert_eq!(
            fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        assert_eq!(
            fs::read_to_string(root.path().join("pod/cgroup.subtree_control")).unwrap(),
            "+memory +cpu"
        );
        drop(cg);

        // v1: a hierarchy per controller.
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu"] {
            fs::create_dir(root.path().join(c)).unwrap();
            fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        Cgroup::create(root.path(), Path::new("ns/c1"), r).unwrap();
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/ns/c1/memory.limit_in_bytes"),
            (64 << 20).to_string()
        );
        assert_eq!(read("cpu/ns/c1/cpu.cfs_quota_us"), "10000");
        assert_eq!(read("cpu/ns/c1/cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu/ns/c1/cpu.shares"), "1024");
        assert!(!root.path().join("memory/ns/c1/cpu.shares").exists());
    }

    /// The unified hierarchy: `/sys/fs/cgroup` itself, or `/sys/fs/cgroup/unified` beside v1's.
    fn v2_root() -> PathBuf {
        [Path::new(ROOT), &Path::new(ROOT).join("unified")]
            .into_iter()
            .find(|p| p.join("cgroup.controllers").exists())
            .expect("this test needs a cgroup v2 hierarchy (run as root, as scripts/test does)")
            .to_owned()
    }

    /// Where thread `tid` of this process is in the unified hierarchy.
    fn v2_place(tid: &str) -> String {
        fs::read_to_string(format!("/proc/self/task/{tid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_default()
            .to_owned()
    }

    /// The kernel's own threaded mode, without a CPU controller (this test's machines may
    /// keep cpu on cgroup v1): the process joins the container's cgroup and its threads
    /// land in `shim`; a guest's thread moves to `guests`; leaving and removing work.
    #[test]
    fn with_cgroup_v2_the_shims_threads_and_a_guests_are_in_threaded_children() {
        let root = v2_root();
        let original = v2_place(&this_thread());
        let relative = format!("wasm-oci-unit-{}", std::process::id());
        let dir = root.join(&relative);
        fs::create_dir(&dir).unwrap();
        let cgroup = Cgroup {
            dirs: vec![(root.clone(), dir.clone(), vec![dir.clone()])],
            v2: true,
            threads: Some(Threads::make(&dir, false).unwrap()),
        };
        assert_eq!(
            fs::read_to_string(dir.join("shim/cgroup.type"))
                .unwrap()
                .trim(),
            "threaded"
        );
        assert_eq!(
            fs::read_to_string(dir.join("cgroup.type")).unwrap().trim(),
            "domain threaded"
        );
        cgroup.join();
        let shim = format!("/{relative}/shim");
        assert_eq!(v2_place(&this_thread()), shim);
        let cgroup = Arc::new(cgroup);
        let (entered, guest_place) = std::thread::spawn({
            let cgroup = cgroup.clone();
            move || (cgroup.enter_thread(), v2_place(&this_thread()))
        })
        .join()
        .unwrap();
        assert!(entered);
        assert_eq!(guest_place, format!("/{relative}/guests"));
        // The shim's thread stayed out of the guests' cgroup.
        assert_eq!(v2_place(&this_thread()), shim);
        cgroup.leave();
        assert_eq!(v2_place(&this_thread()), "/");
        // Back where the test process was.
        let _ = fs::write(
            root.join(original.trim_start_matches('/'))
                .join("cgroup.procs"),
            std::process::id().to_string(),
        );
        // The guest's thread has ended; the kernel lets its cgroup go once it has exited.
        for _ in 0..3000 {
            cgroup.remove();
            if !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
