//! The task service's requests, one `task_*` function each, and containerd's `Task` trait as
//! thin wrappers over them, as runwasi's `Local` does: the functions take a request and
//! answer it without ttrpc, and a task moves from state to state only through [`TaskState`].

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use containerd_shim::asynchronous::util::mount_rootfs;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageField};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::{DeleteResponse, TtrpcResult, api};

use super::container::{Module, discard};
use super::guest::{Guest, open_write};
use super::service::{TaskService, err, micros, now, pod_network, ts};
use super::state::{Exited, Kill, SIGKILL};
use super::{mounts, spec};
use crate::runner::RunOptions;

impl TaskService {
    /// Mounts the rootfs, reads the spec into a container (its module, limits, network) and
    /// keeps it, created.
    pub(crate) async fn task_create(
        &self,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let began = Instant::now();
        let rootfs = Path::new(&req.bundle).join("rootfs");
        let unmount = || {
            let _ =
                containerd_shim::mount::umount_recursive(Some(&rootfs.display().to_string()), 0);
        };
        let mut read_only = false;
        for m in &req.rootfs {
            mount_rootfs(m, &rootfs)
                .await
                .map_err(|e| err(format!("mounting the rootfs: {e}")))?;
            read_only |= m.options.iter().any(|o| o == "ro");
        }
        if req.rootfs.is_empty() {
            // Mounted already: bound onto itself, so that it can be made nodev below.
            rustix::mount::mount_bind(&rootfs, &rootfs)
                .map_err(|e| err(format!("binding the rootfs {}: {e}", rootfs.display())))?;
        }
        // Device nodes an image holds are files, not devices, for the guest.
        if let Err(e) = mounts::harden(&rootfs, read_only) {
            unmount();
            return Err(err(e));
        }
        let mut container = match spec::prepare(&req, &rootfs, &self.store).await {
            Ok(container) => container,
            Err(e) => {
                unmount();
                return Err(err(e));
            }
        };
        container.mounted = true;
        // On a compiled-code miss, code compiled for the fleet, where the policy vouches for
        // it: the start then loads instead of compiling.
        if let Some(Module::Cached { cache, artifact }) = &container.module
            && let Some(Ok(store)) = self.store.get()
            && let Ok(runner) = self.runner().await
        {
            crate::precompiled::adopt(&store.fetcher, cache, &artifact.entry, &runner).await;
        }
        {
            let mut containers = self.containers.lock().expect("containers lock");
            if container.network.is_ours_by_path() {
                match pod_network(&containers, &req.bundle, container.sandbox.as_deref()) {
                    Some(network) => container.network = network,
                    None => {
                        drop(containers);
                        discard(&container);
                        return Err(err(
                            "the spec asks for a network namespace that is the node's own (a \
                             wasm pod's sandbox is a shim in the node's network), and its pod's \
                             network cannot be found: the container would listen in the node's \
                             network, so it does not start",
                        ));
                    }
                }
            }
            containers.insert(req.id.clone(), container);
        }
        self.join_cgroup(&req.id);
        let pid = std::process::id();
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        tracing::debug!(id = %req.id, micros = micros(began), "task created");
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Starts a created task: its guest on a thread of its own (a sandbox's only waits to be
    /// killed); when that ends, the task stops and containerd hears of it.
    pub(crate) async fn task_start(
        &self,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let began = Instant::now();
        let pid = std::process::id();
        let runner = self.runner().await?;
        let (guest, signal, state, killed) = self.with(&req.id, |c| {
            let mut started = Ok(());
            c.state.send_if_modified(|s| {
                started = s.start();
                started.is_ok()
            });
            started.map_err(|e| err(format!("container {}: {e}", req.id)))?;
            // The guest takes the wasm (a sandbox container has none, and runs no guest).
            let guest = c.module.take().map(|module| Guest {
                options: RunOptions {
                    args: c.args.clone(),
                    env: c.env.clone(),
                    preopens: c.preopens.clone(),
                    max_memory: c.max_memory,
                    stdout: open_write(&c.stdout),
                    stderr: open_write(&c.stderr),
                    stop: Some(c.stop.clone()),
                    memory_gauge: Some(c.usage.memory.clone()),
                    identity: c.identity.clone(),
                    ..RunOptions::default()
                },
                stdin: (!c.stdin.is_empty()).then(|| c.stdin.clone()),
                module,
                cgroup: c.cgroup.clone(),
                signal: c.signal.clone(),
                abort: c.abort.clone(),
                usage: c.usage.clone(),
                network: c.network.clone(),
            });
            Ok((guest, c.signal.clone(), c.state.clone(), c.killed.clone()))
        })?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u32>();
        if let Some(guest) = guest {
            let store = self.store.clone();
            let id = req.id.clone();
            std::thread::spawn(move || {
                let ran = Instant::now();
                let code = guest.run(&runner, &store);
                tracing::debug!(%id, code, micros = micros(ran), "guest exited");
                let _ = done_tx.send(code);
            });
        } else {
            tokio::spawn(async move {
                killed.notified().await;
                let _ = done_tx.send(128 + *signal.lock().expect("signal lock"));
            });
        }
        let service = self.clone();
        let id = req.id.clone();
        tokio::spawn(async move {
            let code = done_rx.await.unwrap_or(255);
            let at = now();
            state.send_modify(|s| s.exit(Exited { code, at }));
            service
                .publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: id.clone(),
                        id,
                        pid,
                        exit_status: code,
                        exited_at: MessageField::some(ts(at)),
                        ..Default::default()
                    }),
                )
                .await;
        });
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        tracing::debug!(id = %req.id, micros = micros(began), "task started");
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Answers when the task has stopped.
    pub(crate) async fn task_wait(&self, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let mut state = self.with(&req.id, |c| Ok(c.state.subscribe()))?;
        let exited = loop {
            if let Some(e) = state.borrow_and_update().exited() {
                break e;
            }
            if state.changed().await.is_err() {
                return Err(err("the container went away"));
            }
        };
        Ok(api::WaitResponse {
            exit_status: exited.code,
            exited_at: MessageField::some(ts(exited.at)),
            ..Default::default()
        })
    }

    /// Tells a task's guests to stop: at once for a SIGKILL, after the requests in flight for
    /// an HTTP component's SIGTERM. A task that never started stops here.
    pub(crate) fn task_kill(&self, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.with(&req.id, |c| {
            *c.signal.lock().expect("signal lock") = req.signal;
            if req.signal == SIGKILL {
                c.abort.store(true, Ordering::SeqCst);
            }
            c.stop.store(true, Ordering::SeqCst);
            let mut kill = Kill::AlreadyStopped;
            c.state.send_modify(|s| kill = s.kill(req.signal, now()));
            if kill == Kill::StopGuest {
                c.killed.notify_one();
            }
            Ok(())
        })?;
        Ok(api::Empty::new())
    }

    /// Forgets a task, undoing its mounts and cgroup.
    pub(crate) async fn task_delete(&self, req: api::DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let began = Instant::now();
        let container = self
            .containers
            .lock()
            .expect("containers lock")
            .remove(&req.id)
            .ok_or_else(|| err(format!("container {} not found", req.id)))?;
        // Whatever of it still runs stops: a compile of its module above all, which runs
        // outside its cgroup.
        container.stop.store(true, Ordering::SeqCst);
        container.abort.store(true, Ordering::SeqCst);
        self.leave_cgroup(&req.id, &container);
        discard(&container);
        let exited = container.state.borrow().for_delete(now());
        let pid = std::process::id();
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: exited.code,
                exited_at: MessageField::some(ts(exited.at)),
                ..Default::default()
            }),
        )
        .await;
        tracing::debug!(id = %req.id, micros = micros(began), "task deleted");
        Ok(DeleteResponse {
            pid,
            exit_status: exited.code,
            exited_at: MessageField::some(ts(exited.at)),
            ..Default::default()
        })
    }

    /// The task's state, stdio and exit, as `ctr tasks ls` shows them.
    pub(crate) fn task_state(&self, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        self.with(&req.id, |c| {
            let state = *c.state.borrow();
            let exited = state.exited();
            Ok(api::StateResponse {
                id: req.id.clone(),
                bundle: c.bundle.clone(),
                pid: std::process::id(),
                status: EnumOrUnknown::new(state.status()),
                stdin: c.stdin.clone(),
                stdout: c.stdout.clone(),
                stderr: c.stderr.clone(),
                exit_status: exited.map_or(0, |e| e.code),
                exited_at: exited.map_or(MessageField::none(), |e| MessageField::some(ts(e.at))),
                ..Default::default()
            })
        })
    }

    /// What the task's guest costs: its cgroup's figures, and in a group, what its guest holds
    /// of the process that sits in another container's cgroup.
    pub(crate) fn task_stats(&self, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let joined = self.joined.lock().expect("cgroup lock").clone();
        let metrics = self.with(&req.id, |c| {
            let mut metrics = c.cgroup.as_ref().map(|cg| cg.metrics()).unwrap_or_default();
            // In a group, the guests run in the process that sits in one container's cgroup:
            // another container's own cgroup holds none of its guest's memory, which is added,
            // nor (unless its threads are in it) its CPU time.
            if joined.as_deref() != Some(req.id.as_str()) {
                let memory = c.usage.memory.load(Ordering::Relaxed);
                let stat = metrics.memory.mut_or_insert_default();
                let usage = stat.usage.mut_or_insert_default();
                usage.usage += memory;
                stat.rss += memory;
                stat.total_rss += memory;
                if !c.usage.cpu_in_cgroup.load(Ordering::SeqCst) {
                    let cpu = metrics.cpu.mut_or_insert_default();
                    cpu.usage.mut_or_insert_default().total += c.usage.cpu();
                }
            }
            Ok(metrics)
        })?;
        let any = containerd_shim::util::convert_to_any(Box::new(metrics)).map_err(err)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    /// Ends the shim once it holds no container.
    pub(crate) fn task_shutdown(&self) -> TtrpcResult<api::Empty> {
        if self.containers.lock().expect("containers lock").is_empty() {
            // Free the socket's name at once: a new shim for a container of the same id
            // would otherwise find it taken and wait a second for this one to go away.
            let path = self.socket.strip_prefix("unix://").unwrap_or(&self.socket);
            let _ = std::fs::remove_file(path);
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        self.task_create(req).await
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        self.task_start(req).await
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        self.task_wait(req).await
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.task_kill(req)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<DeleteResponse> {
        self.task_delete(req).await
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        self.task_state(req)
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        self.task_stats(req)
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(err(format!(
            "exec is not supported for wasm containers ({}): a wasm guest has no processes \
             to start beside it",
            req.id
        )))
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        self.with(&req.id, |_| Ok(()))?;
        Ok(api::PidsResponse {
            processes: vec![containerd_shim::protos::api::ProcessInfo {
                pid: std::process::id(),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        self.task_shutdown()
    }
}
