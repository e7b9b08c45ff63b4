"""Configuration: the settings read from the environment (``settings``) and the policy file that
names responders, approvers and protected people (``policy_file``)."""
