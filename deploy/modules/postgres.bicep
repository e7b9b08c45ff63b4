// Azure Database for PostgreSQL flexible server for the bot's state, and the STORE-URL secret
// (postgresql://login:password@host:5432/db?sslmode=require) written into the bot's Key Vault.
// Only Key Vault keeps the password; the firewall is opened by postgres-firewall.bicep to the
// Container App's outbound addresses once the app exists.

@description('Azure region.')
param location string

@description('Tags put on every resource.')
param tags object

@description('Server name (globally unique, lowercase).')
param serverName string

@description('The bot\'s database.')
param databaseName string

@description('Administrator login; the bot connects as this role.')
param administratorLogin string

@description('Administrator password.')
@secure()
param administratorPassword string

@description('The Key Vault (in this resource group) that receives STORE-URL.')
param keyVaultName string

@description('When STORE-URL must be rotated by (Unix time, Key Vault\'s `exp`).')
param secretsExpireAt int

@description('Entra ID authentication only: the bot signs in as entraIdentityName with tokens of its managed identity (no password is used or stored); password authentication is switched off.')
param entraAuth bool = false

@description('entraAuth: the managed identity\'s name (the database role the bot connects as).')
param entraIdentityName string = ''

@description('entraAuth: the managed identity\'s principal (object) id, made the server\'s Entra administrator.')
param entraPrincipalId string = ''

@description('Compute: Burstable B1ms is plenty for one bot (a few writes per alert and per click).')
param skuName string = 'Standard_B1ms'

@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string = 'Burstable'

@description('Days of point-in-time restore (7 to 35): the audit trail lives here.')
@minValue(7)
@maxValue(35)
param backupRetentionDays int = 35

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: serverName
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: '16'
    administratorLogin: administratorLogin
    administratorLoginPassword: administratorPassword
    authConfig: {
      activeDirectoryAuth: entraAuth ? 'Enabled' : 'Disabled'
      passwordAuth: entraAuth ? 'Disabled' : 'Enabled'
      tenantId: entraAuth ? tenant().tenantId : null
    }
    storage: {
      storageSizeGB: 32
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
  }
}

// The managed identity as the server's Entra administrator: the role the bot connects as.
resource entraAdministrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (entraAuth) {
  parent: server
  name: entraPrincipalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: entraIdentityName
    tenantId: tenant().tenantId
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

var host = server.properties.fullyQualifiedDomainName
var entraUrl = 'postgresql://${uriComponent(entraIdentityName)}@${host}:5432/${database.name}?sslmode=require'
var passwordUrl = 'postgresql://${administratorLogin}:${uriComponent(administratorPassword)}@${host}:5432/${database.name}?sslmode=require'

resource storeUrl 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'STORE-URL'
  properties: {
    value: entraAuth ? entraUrl : passwordUrl
    contentType: 'PostgreSQL connection URL'
    attributes: {
      exp: secretsExpireAt
    }
  }
}

output fullyQualifiedDomainName string = server.properties.fullyQualifiedDomainName
