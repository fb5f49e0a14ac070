use clap::Parser;

use io::config::{AdminTask, Cli, Command, Role};

// jemalloc: a gateway allocates and frees small buffers on every frame from
// several threads, which glibc's malloc served with a fifth of a gateway's
// CPU; jemalloc also holds less per idle socket (BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("io: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Admin(admin)) = &cli.command {
        io::telemetry::init_logging(admin.settings.log_format);
        let AdminTask::ProvisionUsers { count, out, prefix } = &admin.task;
        return match io::admin::provision_users(&admin.settings, *count, out, prefix).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("io admin: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let (role, settings) = cli.into_role();
    io::telemetry::init_logging(settings.log_format);
    if role == Role::Migrate {
        return match io_store::migrate(&settings.database_url).await {
            Ok(()) => {
                tracing::info!("migrations applied");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("io migrate: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let running = match io::app::start(role, settings).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("io {}: {e:#}", role.as_str());
            return std::process::ExitCode::FAILURE;
        }
    };
    io::app::signal().await;
    tracing::info!("shutting down");
    running.shutdown.cancel();
    running.wait().await;
    std::process::ExitCode::SUCCESS
}
