// Firewall rules of the PostgreSQL flexible server: one per outbound address of the Container App,
// so nothing else on the internet (or in Azure) can reach the database. A module because the
// addresses are known only once the app exists.

@description('The PostgreSQL flexible server (in this resource group).')
param serverName string

@description('The Container App\'s outbound IP addresses.')
param ipAddresses array

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' existing = {
  name: serverName
}

// One at a time: the server refuses concurrent firewall changes.
@batchSize(1)
resource rules 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = [for (address, index) in ipAddresses: {
  parent: server
  name: 'container-app-outbound-${index}'
  properties: {
    startIpAddress: address
    endIpAddress: address
  }
}]
