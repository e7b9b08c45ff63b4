// remediation-bot on Azure: Azure Container Apps (one always-on replica), a user-assigned managed
// identity, Key Vault for every secret (referenced, never copied into the app's configuration),
// an Azure Bot with the Teams channel, Log Analytics + Application Insights, and optionally an
// Azure Database for PostgreSQL flexible server for the bot's state.
//
// Why Container Apps (not App Service): Key Vault secrets can be referenced both as environment
// variables and as files (a Graph certificate PEM and the policy YAML are files to the bot), the
// console log lands in Log Analytics without an agent, and minReplicas = maxReplicas = 1 keeps the
// alert poller alive without an App Service plan. See deploy/README.md.
//
// Check where the tools exist:  az bicep build --file deploy/main.bicep
//                               az deployment group what-if -g RG -f deploy/main.bicep -p @deploy/main.parameters.json ...

targetScope = 'resourceGroup'

// -- parameters ------------------------------------------------------------------------------

@description('Azure region of everything but the Azure Bot (which is global).')
param location string = resourceGroup().location

@description('Prefix of the resource names: lowercase letters and digits, starting with a letter.')
@minLength(3)
@maxLength(10)
param namePrefix string = 'rembot'

@description('Tags put on every resource.')
param tags object = {
  application: 'remediation-bot'
}

@description('The container image, e.g. contosoregistry.azurecr.io/remediation-bot:0.1.0 (built from deploy/Dockerfile).')
param image string

@description('An Azure Container Registry in this resource group that holds the image; the managed identity gets AcrPull on it. Empty for a public image.')
param containerRegistryName string = ''

@description('How the Azure Bot authenticates: SingleTenant (an app registration; its client secret is MicrosoftAppPassword in Key Vault) or UserAssignedMSI (the managed identity deployed here; no secret).')
@allowed([
  'SingleTenant'
  'UserAssignedMSI'
])
param botAppType string = 'SingleTenant'

@description('SingleTenant only: the application (client) id of the bot app registration.')
param botAppId string = ''

@description('SingleTenant only: a client secret of the bot app registration. Written to Key Vault as MicrosoftAppPassword; leave empty on later deployments to keep the stored value.')
@secure()
param botAppPassword string = ''

@description('secret or certificate: the application (client) id of the Graph app registration (the one holding the Graph application permissions; it may be the bot app registration). Ignored for managedIdentity.')
param graphClientId string = ''

@description('How the bot authenticates to Graph: managedIdentity (the user-assigned identity deployed here holds the Graph application permissions, granted by this template; no secret anywhere), secret (GRAPH-CLIENT-SECRET in Key Vault) or certificate (GRAPH-CERTIFICATE-PEM in Key Vault, a PEM holding the private key, mounted as a file).')
@allowed([
  'managedIdentity'
  'secret'
  'certificate'
])
param graphCredential string = 'secret'

@description('graphCredential=managedIdentity: the Microsoft Graph application permissions granted to the managed identity (the least-privileged set the bot calls; README "Permissions"). The deploying account needs AppRoleAssignment.ReadWrite.All and Application.Read.All in Graph.')
param graphAppRoles array = [
  'GroupMember.Read.All'
  'IdentityRiskEvent.Read.All'
  'IdentityRiskyUser.Read.All'
  'IdentityRiskyUser.ReadWrite.All'
  'RoleManagement.Read.Directory'
  'SecurityAlert.Read.All'
  'SecurityAlert.ReadWrite.All'
  'SecurityIdentitiesAccount.Read.All'
  'SecurityIdentitiesActions.ReadWrite.All'
  'User-PasswordProfile.ReadWrite.All'
  'User.EnableDisableAccount.All'
  'User.Read.All'
  'User.RevokeSessions.All'
]

@description('graphCredential=secret: the Graph app client secret, written to Key Vault as GRAPH-CLIENT-SECRET; empty keeps the stored value.')
@secure()
param graphClientSecret string = ''

@description('graphCredential=certificate: the PEM (private key and certificate), written to Key Vault as GRAPH-CERTIFICATE-PEM; empty keeps the stored value.')
@secure()
param graphCertificatePem string = ''

@description('graphCredential=certificate: the certificate SHA-1 thumbprint as shown in the app registration.')
param graphCertificateThumbprint string = ''

@description('The HMAC key of the audit trail (32+ random characters, e.g. openssl rand -base64 48), written to Key Vault as AUDIT-HMAC-KEY; required on the first deployment (the bot does not start without it), empty later keeps the stored value. Never store it next to the database.')
@secure()
param auditHmacKey string = ''

@description('The approval page: the bot\'s public https origin (e.g. https://remediation-bot.contoso.com, or the Container App\'s https FQDN). Register <approvalPageUrl>/approve/callback as a Web redirect URI on the Graph app registration. Needs graphCredential secret or certificate (a managed identity cannot sign people in). Empty turns the page off (cards carry no page link).')
param approvalPageUrl string = ''

@description('With approvalPageUrl: the key sealing the page\'s cookies (32+ random characters, e.g. openssl rand -base64 48), written to Key Vault as APPROVAL-PAGE-SESSION-KEY; required the first time the page is turned on, empty later keeps the stored value.')
@secure()
param approvalPageSessionKey string = ''

@description('The incident channel id (19:...@thread.tacv2); cards are posted only there.')
param teamsChannelId string

@description('The policy file contents (see policy.example.yaml), mounted as /mnt/secrets/policy.yaml. Empty: the responders parameter applies.')
param policyYaml string = ''

@description('Used when policyYaml is empty: Entra object ids allowed to act, comma-separated. Empty means nobody can act.')
param responders string = ''

@description('Status set on the alerts of a case after a successful action: empty (leave it), inProgress or resolved.')
@allowed([
  ''
  'inProgress'
  'resolved'
])
param alertStatusAfterAction string = ''

@description('Deploy an Azure Database for PostgreSQL flexible server and point STORE_URL at it. false: give storeUrl (or put STORE-URL in Key Vault yourself).')
param deployPostgres bool = true

@description('deployPostgres with graphCredential=managedIdentity: Entra ID authentication only (the bot signs in to PostgreSQL with tokens of its managed identity; no database password exists). Otherwise the administrator password below.')
param postgresEntraAuth bool = false

@description('deployPostgres: the server administrator login (the bot connects as this role).')
param postgresAdminLogin string = 'remediationbot'

@description('deployPostgres: the administrator password (required then). Only Key Vault keeps it, inside STORE-URL.')
@secure()
param postgresAdminPassword string = ''

@description('deployPostgres=false: the STORE_URL to write to Key Vault (postgresql://...; a sqlite:/// path would live in the replica and be lost on restart). Empty keeps the stored value.')
@secure()
param storeUrl string = ''

@description('Replicas of the bot. Keep 1 unless STORE_URL is PostgreSQL (then replicas share the work: one polls, any one executes).')
@minValue(1)
@maxValue(5)
param replicas int = 1

@description('Azure Bot pricing tier: F0 (free, standard channels such as Teams are free anyway) or S1.')
@allowed([
  'F0'
  'S1'
])
param botSku string = 'F0'

@description('Days Log Analytics keeps the logs (the bot console log and Key Vault access audit).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 90

@description('Stream the audit trail to the custom table RemediationBotAudit_CL of the Log Analytics workspace (and so to Microsoft Sentinel when Sentinel is enabled on it) through the Azure Monitor Logs Ingestion API: a data collection endpoint and rule are created, and the bot\'s identity may publish to the rule only.')
param auditToSiem bool = true

@description('auditToSiem with graphCredential secret or certificate: the object id of the Graph app\'s service principal (Enterprise applications), which gets Monitoring Metrics Publisher on the rule (the bot sends with its Graph credential). With managedIdentity the managed identity gets it; empty otherwise: assign the role yourself.')
param graphAppPrincipalId string = ''

@description('When the secrets this deployment writes must be rotated by (Unix time, Key Vault\'s `exp`): Defender for Cloud and Azure Policy flag a secret near or past it. Default: one year from the deployment. Rotate in Key Vault (or redeploy with new values), then restart the revision.')
param secretsExpireAt int = dateTimeToEpoch(dateTimeAdd(utcNow(), 'P1Y'))

// -- names and constants ---------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id)
var prefix = toLower(namePrefix)
var names = {
  identity: '${prefix}-id-${suffix}'
  logs: '${prefix}-logs-${suffix}'
  insights: '${prefix}-ai-${suffix}'
  vault: take('${prefix}kv${suffix}', 24)
  environment: '${prefix}-env-${suffix}'
  app: take('${prefix}-app-${suffix}', 32)
  bot: '${prefix}-bot-${suffix}'
  postgres: '${prefix}-pg-${suffix}'
  ingestionEndpoint: '${prefix}-dce-${suffix}'
  ingestionRule: '${prefix}-dcr-audit-${suffix}'
}
var databaseName = 'remediationbot'

// Built-in role: Key Vault Secrets User (read secret values).
var keyVaultSecretsUserRole = '4633458b-17de-408a-b874-0445c86b69e6'
// Built-in role: Monitoring Metrics Publisher (send to a data collection rule).
var monitoringMetricsPublisherRole = '3913510d-42f4-4e42-8a64-420c390055eb'

// The audit table's columns: one row per audit event, as bot/services/siem.py sends it (a test
// keeps the two in step). Sequence and Hash let a query drop a re-sent row and check the chain.
var auditColumns = [
  { name: 'TimeGenerated', type: 'datetime' }
  { name: 'Sequence', type: 'long' }
  { name: 'Kind', type: 'string' }
  { name: 'ActorId', type: 'string' }
  { name: 'ActorName', type: 'string' }
  { name: 'CaseId', type: 'string' }
  { name: 'RequestId', type: 'string' }
  { name: 'Identity', type: 'string' }
  { name: 'Payload', type: 'dynamic' }
  { name: 'PreviousHash', type: 'string' }
  { name: 'Hash', type: 'string' }
  { name: 'KeyId', type: 'string' }
]
var auditStream = 'Custom-RemediationBotAudit_CL'

var secretsMountPath = '/mnt/secrets'
var botMsaAppId = botAppType == 'UserAssignedMSI' ? identity.properties.clientId : botAppId

// -- identity, logs, Key Vault ---------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

// graphCredential=managedIdentity: Graph's application permissions granted to the managed identity
// (what admin consent does for an app registration), through the Microsoft Graph Bicep extension.
module graphPermissions 'modules/graph-permissions.bicep' = if (graphCredential == 'managedIdentity') {
  name: 'graph-permissions'
  params: {
    principalId: identity.properties.principalId
    appRoles: graphAppRoles
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: names.logs
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

// -- the audit trail to the SIEM (Logs Ingestion API) ------------------------------------------

resource auditTable 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = if (auditToSiem) {
  parent: logs
  name: 'RemediationBotAudit_CL'
  properties: {
    plan: 'Analytics'
    schema: {
      name: 'RemediationBotAudit_CL'
      columns: auditColumns
    }
  }
}

resource ingestionEndpoint 'Microsoft.Insights/dataCollectionEndpoints@2023-03-11' = if (auditToSiem) {
  name: names.ingestionEndpoint
  location: location
  tags: tags
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource ingestionRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = if (auditToSiem) {
  name: names.ingestionRule
  location: location
  tags: tags
  properties: {
    dataCollectionEndpointId: ingestionEndpoint.id
    streamDeclarations: {
      '${auditStream}': {
        columns: auditColumns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: logs.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          auditStream
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: auditStream
      }
    ]
  }
  dependsOn: [
    auditTable
  ]
}

var auditPublisherId = graphCredential == 'managedIdentity' ? identity.properties.principalId : graphAppPrincipalId

resource auditPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (auditToSiem && !empty(auditPublisherId)) {
  name: guid(ingestionRule.id, auditPublisherId, monitoringMetricsPublisherRole)
  scope: ingestionRule
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRole)
    principalId: auditPublisherId
    principalType: 'ServicePrincipal'
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: names.insights
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    IngestionMode: 'LogAnalytics'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Container Apps reads Key Vault references over the public endpoint unless the environment is VNet-integrated with a private endpoint (not deployed here yet; see deploy/README.md, "Network"); access is by RBAC to the bot's identity only, and every read is audited
  // checkov:skip=CKV_AZURE_189: as above: closing public access needs the private-endpoint deployment
  name: names.vault
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access by Azure RBAC only: the bot's identity may read secrets, nothing else.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

// Who read which secret, when: the vault's audit log goes to Log Analytics.
resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logs.id
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, keyVaultSecretsUserRole)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRole)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Secrets are written only when a value is given, so a later deployment without them keeps what
// the vault holds (rotate in Key Vault, then restart the revision).
resource botPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (botAppType == 'SingleTenant' && !empty(botAppPassword)) {
  // checkov:skip=CKV_AZURE_41: exp is set below; the scanner does not read the body of a conditional resource
  // checkov:skip=CKV_AZURE_114: contentType is set below; the scanner does not read the body of a conditional resource
  parent: vault
  name: 'MicrosoftAppPassword'
  properties: {
    value: botAppPassword
    contentType: 'Bot app registration client secret'
    attributes: {
      exp: secretsExpireAt
    }
  }
}

resource graphSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (graphCredential == 'secret' && !empty(graphClientSecret)) {
  // checkov:skip=CKV_AZURE_41: exp is set below; the scanner does not read the body of a conditional resource
  // checkov:skip=CKV_AZURE_114: contentType is set below; the scanner does not read the body of a conditional resource
  parent: vault
  name: 'GRAPH-CLIENT-SECRET'
  properties: {
    value: graphClientSecret
    contentType: 'Graph app registration client secret'
    attributes: {
      exp: secretsExpireAt
    }
  }
}

resource graphCertificate 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (graphCredential == 'certificate' && !empty(graphCertificatePem)) {
  // checkov:skip=CKV_AZURE_41: exp is set below; the scanner does not read the body of a conditional resource
  // checkov:skip=CKV_AZURE_114: contentType is set below; the scanner does not read the body of a conditional resource
  parent: vault
  name: 'GRAPH-CERTIFICATE-PEM'
  properties: {
    value: graphCertificatePem
    contentType: 'application/x-pem-file'
    attributes: {
      exp: secretsExpireAt
    }
  }
}

resource auditKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(auditHmacKey)) {
  // checkov:skip=CKV_AZURE_41: exp is set below; the scanner does not read the body of a conditional resource
  // checkov:skip=CKV_AZURE_114: contentType is set below; the scanner does not read the body of a conditional resource
  parent: vault
  name: 'AUDIT-HMAC-KEY'
  properties: {
    value: auditHmacKey
    contentType: 'HMAC key of the audit trail (32+ random characters)'
    attributes: {
      exp: secretsExpireAt
    }
  }
}

resource approvalPageKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(approvalPageUrl) && !empty(approvalPageSessionKey)) {
  parent: vault
  name: 'APPROVAL-PAGE-SESSION-KEY'
  properties: {
    value: approvalPageSessionKey
  }
}

resource givenStoreUrl 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!deployPostgres && !empty(storeUrl)) {
  // checkov:skip=CKV_AZURE_41: exp is set below; the scanner does not read the body of a conditional resource
  // checkov:skip=CKV_AZURE_114: contentType is set below; the scanner does not read the body of a conditional resource
  parent: vault
  name: 'STORE-URL'
  properties: {
    value: storeUrl
    contentType: 'Database connection URL'
    attributes: {
      exp: secretsExpireAt
    }
  }
}

// -- the bot's state -------------------------------------------------------------------------

// Writes STORE-URL (postgresql://...?sslmode=require) into the vault itself.
module postgres 'modules/postgres.bicep' = if (deployPostgres) {
  name: 'postgres'
  params: {
    location: location
    tags: tags
    serverName: names.postgres
    databaseName: databaseName
    administratorLogin: postgresAdminLogin
    administratorPassword: postgresAdminPassword
    entraAuth: postgresEntraAuth
    entraIdentityName: identity.name
    entraPrincipalId: identity.properties.principalId
    keyVaultName: vault.name
    secretsExpireAt: secretsExpireAt
  }
}

module acrPull 'modules/acr-pull.bicep' = if (!empty(containerRegistryName)) {
  name: 'acr-pull'
  params: {
    registryName: containerRegistryName
    principalId: identity.properties.principalId
  }
}

// -- the app ---------------------------------------------------------------------------------

resource appEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: names.environment
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

// Container App secrets that are Key Vault references: the platform reads them with the managed identity.
var botPasswordRef = botAppType == 'SingleTenant' ? [
  {
    name: 'microsoft-app-password'
    keyVaultUrl: '${vault.properties.vaultUri}secrets/MicrosoftAppPassword'
    identity: identity.id
  }
] : []
var graphCredentialRef = graphCredential == 'secret' ? [
  {
    name: 'graph-client-secret'
    keyVaultUrl: '${vault.properties.vaultUri}secrets/GRAPH-CLIENT-SECRET'
    identity: identity.id
  }
] : graphCredential == 'certificate' ? [
  {
    name: 'graph-certificate-pem'
    keyVaultUrl: '${vault.properties.vaultUri}secrets/GRAPH-CERTIFICATE-PEM'
    identity: identity.id
  }
] : []
var storeUrlRef = [
  {
    name: 'store-url'
    keyVaultUrl: '${vault.properties.vaultUri}secrets/STORE-URL'
    identity: identity.id
  }
]
// The audit key, like every secret, is a Key Vault reference: the database never holds it.
var auditKeyRef = [
  {
    name: 'audit-hmac-key'
    keyVaultUrl: '${vault.properties.vaultUri}secrets/AUDIT-HMAC-KEY'
    identity: identity.id
  }
]
// The policy is not secret; a secret volume is simply how a Container App gets a file.
var policySecret = empty(policyYaml) ? [] : [
  {
    name: 'policy-yaml'
    value: policyYaml
  }
]
var approvalPageKeyRef = empty(approvalPageUrl) ? [] : [
  {
    name: 'approval-page-session-key'
    keyVaultUrl: '${vault.properties.vaultUri}secrets/APPROVAL-PAGE-SESSION-KEY'
    identity: identity.id
  }
]
var appSecrets = concat(botPasswordRef, graphCredentialRef, storeUrlRef, auditKeyRef, approvalPageKeyRef, policySecret)

var certificateFile = graphCredential == 'certificate' ? [
  {
    secretRef: 'graph-certificate-pem'
    path: 'graph-certificate.pem'
  }
] : []
var policyFile = empty(policyYaml) ? [] : [
  {
    secretRef: 'policy-yaml'
    path: 'policy.yaml'
  }
]
var fileSecrets = concat(certificateFile, policyFile)

var commonEnv = [
  {
    name: 'MicrosoftAppId'
    value: botMsaAppId
  }
  {
    name: 'MicrosoftAppType'
    value: botAppType
  }
  {
    name: 'MicrosoftAppTenantId'
    value: tenant().tenantId
  }
  {
    name: 'GRAPH_TENANT_ID'
    value: tenant().tenantId
  }
  {
    name: 'GRAPH_CLIENT_ID'
    value: graphCredential == 'managedIdentity' ? identity.properties.clientId : graphClientId
  }
  {
    name: 'TEAMS_CHANNEL_ID'
    value: teamsChannelId
  }
  {
    name: 'STORE_URL'
    secretRef: 'store-url'
  }
  {
    name: 'AUDIT_HMAC_KEY'
    secretRef: 'audit-hmac-key'
  }
  {
    name: 'ALERT_STATUS_AFTER_ACTION'
    value: alertStatusAfterAction
  }
  {
    name: 'LOG_LEVEL'
    value: 'INFO'
  }
]
var botPasswordEnv = botAppType == 'SingleTenant' ? [
  {
    name: 'MicrosoftAppPassword'
    secretRef: 'microsoft-app-password'
  }
] : []
var graphCredentialEnv = graphCredential == 'managedIdentity' ? [
  {
    // GRAPH_CLIENT_ID (above) is the identity's client id; Container Apps sets IDENTITY_ENDPOINT
    // and IDENTITY_HEADER, where msal asks for its tokens.
    name: 'GRAPH_MANAGED_IDENTITY'
    value: 'user'
  }
] : graphCredential == 'secret' ? [
  {
    name: 'GRAPH_CLIENT_SECRET'
    secretRef: 'graph-client-secret'
  }
] : [
  {
    name: 'GRAPH_CERTIFICATE_PATH'
    value: '${secretsMountPath}/graph-certificate.pem'
  }
  {
    name: 'GRAPH_CERTIFICATE_THUMBPRINT'
    value: graphCertificateThumbprint
  }
]
var whoMayActEnv = empty(policyYaml) ? [
  {
    name: 'RESPONDERS'
    value: responders
  }
] : [
  {
    name: 'POLICY_FILE'
    value: '${secretsMountPath}/policy.yaml'
  }
]
var auditStreamEnv = auditToSiem ? [
  {
    name: 'AUDIT_INGESTION_ENDPOINT'
    value: ingestionEndpoint.properties.logsIngestion.endpoint
  }
  {
    name: 'AUDIT_INGESTION_RULE_ID'
    value: ingestionRule.properties.immutableId
  }
  {
    name: 'AUDIT_INGESTION_STREAM'
    value: auditStream
  }
] : []
var storeAuthEnv = deployPostgres && postgresEntraAuth ? [
  {
    name: 'STORE_ENTRA_AUTH'
    value: 'true'
  }
] : []
var approvalPageEnv = empty(approvalPageUrl) ? [] : [
  {
    name: 'APPROVAL_PAGE_URL'
    value: approvalPageUrl
  }
  {
    name: 'APPROVAL_PAGE_SESSION_KEY'
    secretRef: 'approval-page-session-key'
  }
]
var environmentVariables = concat(commonEnv, botPasswordEnv, graphCredentialEnv, whoMayActEnv, auditStreamEnv, storeAuthEnv, approvalPageEnv)

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: names.app
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    managedEnvironmentId: appEnvironment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 3978
        transport: 'auto'
        allowInsecure: false
      }
      registries: empty(containerRegistryName) ? [] : [
        {
          server: '${containerRegistryName}${environment().suffixes.acrLoginServer}'
          identity: identity.id
        }
      ]
      secrets: appSecrets
    }
    template: {
      containers: [
        {
          name: 'remediation-bot'
          image: image
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          env: environmentVariables
          probes: [
            {
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: 3978
              }
              periodSeconds: 10
              failureThreshold: 10
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: 3978
              }
              periodSeconds: 30
              failureThreshold: 3
            }
          ]
          volumeMounts: empty(fileSecrets) ? [] : [
            {
              volumeName: 'secrets'
              mountPath: secretsMountPath
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: replicas
      }
      volumes: empty(fileSecrets) ? [] : [
        {
          name: 'secrets'
          storageType: 'Secret'
          secrets: fileSecrets
        }
      ]
    }
  }
  dependsOn: [
    vaultSecretsUser
    botPasswordSecret
    graphSecret
    graphCertificate
    givenStoreUrl
    postgres
    acrPull
  ]
}

// Only the app's outbound addresses may reach the database.
module postgresFirewall 'modules/postgres-firewall.bicep' = if (deployPostgres) {
  name: 'postgres-firewall'
  params: {
    serverName: names.postgres
    ipAddresses: app.properties.outboundIpAddresses
  }
  dependsOn: [
    postgres
  ]
}

// -- the Azure Bot ---------------------------------------------------------------------------

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: names.bot
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: botSku
  }
  properties: {
    displayName: 'Remediation Bot'
    description: 'Contains compromised Microsoft 365 identities from Microsoft Teams.'
    endpoint: 'https://${app.properties.configuration.ingress.fqdn}/api/messages'
    msaAppId: botMsaAppId
    msaAppType: botAppType
    msaAppTenantId: tenant().tenantId
    msaAppMSIResourceId: botAppType == 'UserAssignedMSI' ? identity.id : null
    developerAppInsightKey: insights.properties.InstrumentationKey
    developerAppInsightsApplicationId: insights.properties.AppId
    publicNetworkAccess: 'Enabled'
  }
}

resource teamsChannel 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
    }
  }
}

// -- outputs ---------------------------------------------------------------------------------

@description('The Azure Bot messaging endpoint.')
output messagingEndpoint string = 'https://${app.properties.configuration.ingress.fqdn}/api/messages'

@description('Pass to remediation-bot manifest build --bot-domain.')
output botDomain string = app.properties.configuration.ingress.fqdn

@description('Pass to remediation-bot manifest build --bot-id (MicrosoftAppId).')
output microsoftAppId string = botMsaAppId

output botName string = bot.name
output containerAppName string = app.name
output keyVaultName string = vault.name
output logAnalyticsWorkspaceName string = logs.name
output managedIdentityClientId string = identity.properties.clientId
output managedIdentityPrincipalId string = identity.properties.principalId
output postgresServerName string = deployPostgres ? names.postgres : ''
