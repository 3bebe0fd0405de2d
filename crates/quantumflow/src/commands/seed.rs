//! `quantumflow seed`: the demo data of the data model's article.
//!
//! An admin and a demo user, a Slack-webhook and an e-mail connector, and the "new user
//! registration notification" workflow (webhook → transform → Slack). Nothing secret is built
//! in: passwords come from flags or the environment or are generated and printed once, and
//! connectors without their secret are created inactive. Given secrets are sealed with the
//! configured credential keys, like those stored through the API.

use std::io::Write;

use anyhow::{Context, bail};
use quantumflow_api::auth::hash_password;
use quantumflow_domain::graph::{EdgeSpec, NodeSpec};
use quantumflow_domain::{EdgeKind, NodeKind, WorkflowGraph, WorkflowStatus};
use quantumflow_secrets::{KEYS_VAR, Keyring};
use quantumflow_storage::connectors::{self, NewConnector};
use quantumflow_storage::users::{self, NewUser};
use quantumflow_storage::workflows::{self, NewEdge, NewNode, NewWorkflow};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::SeedArgs;
use crate::commands::accounts::Password;

/// The demo workflow's webhook.
const WEBHOOK_PATH: &str = "/webhook/new-user";

pub(crate) async fn run(
    pool: &PgPool,
    args: &SeedArgs,
    keyring: Option<&Keyring>,
) -> anyhow::Result<()> {
    if keyring.is_none() && (args.slack_webhook_url.is_some() || args.email_api_key.is_some()) {
        bail!(
            "the connectors' credentials are stored encrypted, and no key is configured; set \
             {KEYS_VAR} (`quantumflow keys generate` prints an entry) or leave out the secrets"
        );
    }
    crate::commands::serve::check_schema(pool).await?;
    let mut out = std::io::stdout().lock();
    if users::find_by_login(pool, "admin").await?.is_some() {
        writeln!(
            out,
            "The demo data is already there (user \"admin\" exists); nothing changed."
        )?;
        return Ok(());
    }

    let password = |given: &Option<String>| {
        given
            .clone()
            .map_or_else(Password::generate, Password::given)
    };
    let admin_password = password(&args.admin_password);
    let demo_password = password(&args.demo_password);

    let mut tx = pool.begin().await?;
    let admin = users::insert(
        &mut *tx,
        &NewUser {
            email: &args.admin_email,
            username: "admin",
            hashed_password: &hash_password(admin_password.value())?,
            full_name: Some("Admin User"),
            is_superuser: true,
        },
    )
    .await
    .context("cannot create the admin user (check --admin-email)")?;
    users::insert(
        &mut *tx,
        &NewUser {
            email: &args.demo_email,
            username: "demo",
            hashed_password: &hash_password(demo_password.value())?,
            full_name: Some("Demo User"),
            is_superuser: false,
        },
    )
    .await
    .context("cannot create the demo user (check --demo-email)")?;

    let slack_id = Uuid::now_v7();
    let slack = connectors::insert(
        &mut *tx,
        &NewConnector {
            id: slack_id,
            name: "Slack Webhook",
            kind: "slack",
            description: Some("Posts messages to a Slack channel"),
            config: &json!({"workspace": "quantumflow-demo"}),
            credentials: &sealed(
                keyring,
                slack_id,
                args.slack_webhook_url
                    .as_ref()
                    .map(|url| json!({"webhook_url": url})),
            )?,
            is_active: args.slack_webhook_url.is_some(),
            test_status: Some("pending"),
            owner_id: admin.id,
        },
    )
    .await?;
    let email_id = Uuid::now_v7();
    connectors::insert(
        &mut *tx,
        &NewConnector {
            id: email_id,
            name: "SendGrid Email",
            kind: "email",
            description: Some("Sends e-mail through SendGrid"),
            config: &json!({"from_email": "noreply@quantumflow.com"}),
            credentials: &sealed(
                keyring,
                email_id,
                args.email_api_key
                    .as_ref()
                    .map(|key| json!({"api_key": key})),
            )?,
            is_active: args.email_api_key.is_some(),
            test_status: Some("pending"),
            owner_id: admin.id,
        },
    )
    .await?;

    let workflow = insert_demo_workflow(&mut tx, admin.id, slack.id).await?;
    tx.commit().await?;

    writeln!(out, "Seeded the demo data:")?;
    writeln!(
        out,
        "  user admin <{}>  password: {}",
        args.admin_email, admin_password
    )?;
    writeln!(
        out,
        "  user demo  <{}>  password: {}",
        args.demo_email, demo_password
    )?;
    writeln!(
        out,
        "  workflow {:?} ({}) listens on POST {WEBHOOK_PATH}",
        workflow.name, workflow.id
    )?;
    if args.slack_webhook_url.is_none() {
        writeln!(
            out,
            "  connector \"Slack Webhook\" is inactive: seed with --slack-webhook-url to use it"
        )?;
    }
    if args.email_api_key.is_none() {
        writeln!(
            out,
            "  connector \"SendGrid Email\" is inactive: seed with --email-api-key to use it"
        )?;
    }
    if admin_password.generated || demo_password.generated {
        writeln!(
            out,
            "Generated passwords are shown only now; store them safely."
        )?;
    }
    Ok(())
}

async fn insert_demo_workflow(
    tx: &mut sqlx::PgConnection,
    owner: uuid::Uuid,
    slack: uuid::Uuid,
) -> anyhow::Result<workflows::Workflow> {
    let trigger = json!({"type": "webhook", "config": {"method": "POST", "path": WEBHOOK_PATH}});
    let settings = json!({"timeout": 60, "retry_policy": {"max_retries": 3, "retry_delay": 10}});
    let empty = json!({});
    let specs: [(&str, NodeKind, Value, Value); 3] = [
        (
            "Webhook trigger",
            NodeKind::Trigger,
            json!({"connector": "webhook", "method": "POST"}),
            json!({"x": 100, "y": 100}),
        ),
        (
            "Transform data",
            NodeKind::Transform,
            json!({"template": {"message": "New user registered: {{input.username}} ({{input.email}})"}}),
            json!({"x": 300, "y": 100}),
        ),
        (
            "Send Slack message",
            NodeKind::Action,
            json!({"connector": "slack", "connector_id": slack, "channel": "#notifications",
                "message": "{{input.message}}"}),
            json!({"x": 500, "y": 100}),
        ),
    ];

    // The demo goes through the same graph validation as any user's workflow.
    let graph_nodes = specs.iter().map(|(name, kind, ..)| NodeSpec {
        name: (*name).into(),
        kind: *kind,
    });
    let graph_edges = [(0, 1), (1, 2)].map(|(s, t): (usize, usize)| EdgeSpec {
        source: specs[s].0.into(),
        target: specs[t].0.into(),
        kind: EdgeKind::Default,
    });
    if let Err(problems) = WorkflowGraph::build(graph_nodes.collect(), &graph_edges) {
        bail!("the demo workflow is invalid: {problems:?}");
    }

    let nodes: Vec<NewNode<'_>> = specs
        .iter()
        .map(|(name, kind, config, position)| NewNode {
            name,
            description: None,
            kind: *kind,
            config,
            input_mapping: &empty,
            output_mapping: &empty,
            position,
            is_enabled: true,
        })
        .collect();
    let edge = |source, target| NewEdge {
        source,
        target,
        kind: EdgeKind::Default,
        condition: &empty,
        label: None,
    };
    let doc = workflows::insert_document(
        tx,
        &NewWorkflow {
            name: "New user registration notification",
            description: Some("Sends a Slack notification when a new user registers"),
            status: WorkflowStatus::Active,
            trigger_config: &trigger,
            settings: &settings,
            owner_id: owner,
        },
        &nodes,
        &[edge(0, 1), edge(1, 2)],
    )
    .await?;
    Ok(doc.workflow)
}

/// The credentials to store for the connector `id`: `{}` without any, sealed otherwise (`run`
/// refuses secrets without a keyring before anything is written).
fn sealed(
    keyring: Option<&Keyring>,
    id: Uuid,
    credentials: Option<Value>,
) -> anyhow::Result<Value> {
    match (credentials, keyring) {
        (Some(clear), Some(keyring)) => Ok(keyring.seal(id, &clear)?),
        (Some(_), None) => bail!("no key to seal credentials with; set {KEYS_VAR}"),
        (None, _) => Ok(json!({})),
    }
}
