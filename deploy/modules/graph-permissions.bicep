// Microsoft Graph application permissions for the bot's managed identity: one app role assignment
// per permission on Microsoft Graph's service principal, as admin consent makes for an app
// registration. Uses the Microsoft Graph Bicep extension (deploy/bicepconfig.json); the deploying
// account needs AppRoleAssignment.ReadWrite.All and Application.Read.All.
//
// Entra roles (e.g. Privileged Authentication Administrator, deploy/README.md 1c) are not app
// roles: assign them to the identity in Roles & admins as for an app registration.
//
// checkov cannot parse Bicep extensions; `make scan` skips this file (it holds no Azure resource).

extension microsoftGraphV1

@description('The managed identity\'s principal (object) id.')
param principalId string

@description('The Graph application permissions (app role values) to grant.')
param appRoles array

// Microsoft Graph's service principal; its appId is the same in every tenant.
resource microsoftGraph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in appRoles: {
  appRoleId: filter(microsoftGraph.appRoles, appRole => appRole.value == role)[0].id
  principalId: principalId
  resourceId: microsoftGraph.id
}]

output granted array = [for (role, i) in appRoles: {
  permission: role
  assignmentId: grants[i].id
}]
