//! `ringkv local-cluster`: the README's main job. Starts nodes on this
//! machine with their data under one folder and prints how to connect.

use anyhow::bail;

use crate::cli::LocalClusterArgs;
use crate::server;

pub fn run(args: LocalClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.nodes > 1 {
        bail!(
            "--nodes {}: this build runs single-node clusters only (the ring and \
             replication are not wired into the binary yet); use --nodes 1",
            args.nodes
        );
    }
    let mut config = args.node.resolve()?;
    let base = args.base_port;
    let i = 0u16;
    let port = |offset: u16| -> anyhow::Result<u16> {
        base.checked_add(10 * i + offset)
            .ok_or_else(|| anyhow::anyhow!("--base-port {base} is too high"))
    };
    if args.node.data_dir.is_none() {
        config.node.data_dir = args.dir.join(format!("node{}", i + 1));
    }
    if args.node.resp_addr.is_none() {
        config.node.resp_addr.set_port(port(0)?);
    }
    if args.node.http_addr.is_none() {
        config.node.http_addr.set_port(port(1)?);
    }
    if args.node.cluster_addr.is_none() {
        config.node.cluster_addr.set_port(port(2)?);
    }
    server::init_logging(&config.node.log);
    let rt = server::runtime()?;
    rt.block_on(async {
        let node = server::start(config.clone()).await?;
        println!(
            "ringkv local cluster: 1 node, data in {}",
            config.node.data_dir.display()
        );
        println!(
            "  node1  id {}  resp {}  http {}",
            ringkv_cluster::node_id::display(node.node_id),
            node.resp_addr,
            node.http_addr
        );
        println!();
        println!("Connect:");
        println!(
            "  redis-cli -p {} SET greeting hello",
            node.resp_addr.port()
        );
        println!("  redis-cli -p {} GET greeting", node.resp_addr.port());
        println!("  curl http://{}/v1/kv/greeting", node.http_addr);
        println!("  curl http://{}/v1/status", node.http_addr);
        println!(
            "Ctrl-C stops the cluster; data stays in {}.",
            config.node.data_dir.display()
        );
        server::shutdown_signal().await;
        node.stop().await
    })
}
