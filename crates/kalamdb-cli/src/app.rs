//! What `kalam` does with its command line: find the server, log in (flags, then saved
//! credentials, then a prompt), then run `-c`/`-f`/piped SQL, `--subscribe`, `--import`, or the
//! interactive shell.

use crate::args::Args;
use crate::client::{self, Client, Session};
use crate::config::{Config, Credentials};
use crate::error::{CliError, Result};
use crate::render::{Expanded, Format, Style};
use crate::runner::{Runner, ctrl_c};
use std::io::Read;
use std::time::Duration;

/// The server a plain `kalam` talks to.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Runs the CLI; returns the process exit code.
pub fn run(args: Args) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR cannot start: {e}");
            return 1;
        }
    };
    match main(&runtime, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR {e}");
            e.exit_code()
        }
    }
}

/// The base URL from the flags and config.
pub fn base_url(args: &Args, config: &Config) -> String {
    let url = match (&args.url, &args.host, args.port) {
        (Some(url), _, _) => url.clone(),
        (None, None, None) => config.url.clone().unwrap_or_else(|| DEFAULT_URL.into()),
        (None, host, port) => format!(
            "http://{}:{}",
            host.as_deref().unwrap_or("127.0.0.1"),
            port.unwrap_or(8080)
        ),
    };
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// The instance name of `url` (its host:port) unless one is given.
fn instance_of(args: &Args, url: &str) -> String {
    args.instance.clone().unwrap_or_else(|| {
        url.split("://")
            .nth(1)
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_string()
    })
}

fn main(rt: &tokio::runtime::Runtime, args: Args) -> Result<u8> {
    let config = Config::load()?;
    let mut url = base_url(&args, &config);
    let instance = instance_of(&args, &url);
    // `--instance NAME` alone talks to the server that instance was saved for.
    let only_instance =
        args.instance.is_some() && args.url.is_none() && args.host.is_none() && args.port.is_none();
    if only_instance && let Some(saved) = Credentials::load()?.instances.get(&instance) {
        url = saved.url.clone();
    }

    if args.show_credentials {
        let saved = Credentials::load()?;
        if saved.instances.is_empty() {
            println!("No saved credentials.");
        }
        for (name, c) in &saved.instances {
            println!(
                "{name}: user {} at {} (token expires {})",
                c.user,
                c.url,
                c.expires_at.as_deref().unwrap_or("?")
            );
        }
        return Ok(0);
    }
    if args.delete_credentials {
        let mut saved = Credentials::load()?;
        let gone = saved.instances.remove(&instance).is_some();
        saved.save()?;
        println!(
            "{}",
            if gone {
                format!("Deleted the saved credentials of {instance}.")
            } else {
                format!("No saved credentials for {instance}.")
            }
        );
        return Ok(0);
    }
    let format = match (
        args.json,
        args.csv,
        args.format.as_deref().or(config.format.as_deref()),
    ) {
        (true, _, _) => Format::Json,
        (_, true, _) => Format::Csv,
        (_, _, Some(f)) => Format::parse(f).ok_or_else(|| {
            CliError::Usage(format!("unknown format '{f}': use table, json or csv"))
        })?,
        _ => Format::Table,
    };
    let style = Style {
        format,
        expanded: Expanded::Auto,
        timing: args.timing || config.timing.unwrap_or(false),
        width: crate::term::size().0,
    };
    let mut client = rt.block_on(connect(&args, &config, &url, &instance))?;
    client.namespace = args.namespace.clone().or(config.namespace.clone());
    let mut runner = Runner {
        client,
        style,
        as_user: None,
    };
    if let Some(sql) = &args.subscribe {
        let Runner { client, style, .. } = &mut runner;
        rt.block_on(crate::live::subscribe(client, sql, style, ctrl_c()))?;
        return Ok(0);
    }
    if let Some([table, file]) = args.import.as_deref() {
        let import = crate::transfer::import(&mut runner, table, file.as_ref());
        let report = crate::runner::cancellable(rt, import)?;
        println!("{}", report.summary(table));
        return Ok(u8::from(!report.rejected.is_empty()));
    }
    let script = match (&args.command, &args.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(path)) => {
            Some(std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?)
        }
        (None, None) if !crate::term::stdin_is_tty() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::Other(format!("cannot read stdin: {e}")))?;
            Some(text)
        }
        _ => None,
    };
    match script {
        Some(text) => {
            let failed = crate::shell::script(rt, &mut runner, &text, args.continue_on_error)?;
            Ok(u8::from(failed > 0))
        }
        None => crate::shell::run(rt, runner, &instance),
    }
}

/// Logs in: `--token`; `--user` (password from `--password` or a prompt); the saved
/// credentials of the instance; `user` of config.toml or a prompt on a terminal.
async fn connect(args: &Args, config: &Config, url: &str, instance: &str) -> Result<Client> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CliError::Other(e.to_string()))?;
    let session = |user: String, token: String| Session {
        url: url.to_string(),
        instance: instance.to_string(),
        user,
        access_token: token,
        refresh_token: None,
        expires_at: None,
    };
    if let Some(token) = &args.token {
        let mut client = Client::new(http, session(String::new(), token.clone()));
        let me = client.get_json("/v1/api/auth/me").await?;
        match me["user"]["id"].as_str() {
            Some(id) => client.session.user = id.to_string(),
            None => return Err(CliError::Auth("the token was refused by the server".into())),
        }
        return Ok(client);
    }
    let saved = Credentials::load()?;
    let user = match (&args.user, saved.instances.get(instance)) {
        (Some(user), _) => user.clone(),
        (None, Some(c)) => {
            let mut client = Client::new(http, session(c.user.clone(), c.access_token.clone()));
            client.session.refresh_token = c.refresh_token.clone();
            client.session.expires_at = c.expires_at.clone();
            client.persist = true;
            return Ok(client);
        }
        (None, None) => match &config.user {
            Some(u) => u.clone(),
            None if crate::term::stdin_is_tty() => prompt("User [root]: ")?
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "root".into()),
            None => {
                return Err(CliError::Auth(
                    "not logged in: pass --user (and --password), --token, or save a login with \
                     --save-credentials"
                        .into(),
                ));
            }
        },
    };
    let password = match &args.password {
        Some(p) => p.clone(),
        None if crate::term::stdin_is_tty() => {
            rpassword::prompt_password(format!("Password for {user}: "))
                .map_err(|e| CliError::Other(format!("cannot read the password: {e}")))?
        }
        None => std::env::var("KALAM_PASSWORD").map_err(|_| {
            CliError::Auth(format!(
                "a password is needed for {user}: pass --password or set KALAM_PASSWORD"
            ))
        })?,
    };
    let login = client::login(&http, url, &user, &password).await?;
    let mut client = Client::new(http, session(login.user.id.clone(), login.access_token));
    client.session.refresh_token = login.refresh_token;
    client.session.expires_at = Some(login.expires_at);
    if args.save_credentials {
        let mut saved = saved;
        saved
            .instances
            .insert(instance.to_string(), client.session.credential());
        saved.save()?;
        client.persist = true;
    }
    Ok(client)
}

/// Reads one line from the terminal after `text`; `None` at end of input.
fn prompt(text: &str) -> Result<Option<String>> {
    use std::io::Write;
    print!("{text}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let n = std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Other(e.to_string()))?;
    Ok((n > 0).then(|| line.trim().to_string()))
}
