#!/usr/bin/python
"""Converge Keystone's service catalog and service users with the node's openstacksdk."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: keystone_catalog
short_description: Keystone projects, roles, services, endpoints and service users
description:
  - Creates what is missing and corrects what differs; never deletes. Endpoints are
    matched on (service, interface, region) and their URL is updated in place. A user's
    password is checked by asking Keystone for a token with it, and reset only when that
    fails. Supports check mode.
  - Uses the openstacksdk of the node it runs on (Debian 12 ships 0.101, older than the
    1.0 the openstack.cloud collection requires; hence this module).
options:
  auth:
    description: The admin's credentials (keystone-manage bootstrap made them).
    type: dict
    required: true
    options:
      auth_url: {description: Keystone's v3 URL., type: str, required: true}
      username: {description: Admin user., type: str, required: true}
      password: {description: Its password., type: str, required: true, no_log: true}
      project_name: {description: Admin project., type: str, required: true}
      domain: {description: Domain of the user and project., type: str, default: Default}
  region:
    description: Region of the endpoints.
    type: str
    default: RegionOne
  projects:
    description: Projects in the default domain.
    type: list
    elements: str
    default: []
  roles:
    description: Roles.
    type: list
    elements: str
    default: []
  services:
    description: Services and their endpoints, interface name to URL.
    type: list
    elements: dict
    default: []
    options:
      name: {description: Service name., type: str, required: true}
      type: {description: Service type., type: str, required: true}
      description: {description: Free text., type: str, default: ""}
      endpoints: {description: public/internal/admin to URL., type: dict, default: {}}
  users:
    description: Users in the default domain, each with roles on one project.
    type: list
    elements: dict
    default: []
    options:
      name: {description: User name., type: str, required: true}
      password: {description: Password., type: str, required: true, no_log: true}
      project: {description: Project of the roles and default project., type: str, required: true}
      roles: {description: Roles on that project., type: list, elements: str, default: []}
"""

RETURN = r"""
changes:
  description: What was created or corrected, by name (never a password).
  returned: always
  type: list
"""


class Catalog:
    def __init__(self, params: dict, check_mode: bool):
        import openstack  # the node's python3-openstacksdk

        self.p = params
        self.check = check_mode
        auth = params["auth"]
        self.conn = openstack.connect(
            auth_url=auth["auth_url"], username=auth["username"], password=auth["password"],
            project_name=auth["project_name"], user_domain_name=auth["domain"],
            project_domain_name=auth["domain"], region_name=params["region"],
            interface="internal", identity_api_version="3")
        self.id = self.conn.identity
        self.domain_id = self.id.find_domain(auth["domain"], ignore_missing=False).id
        self.changes: list[str] = []

    def _do(self, what: str, fn, *args, **kwargs):
        self.changes.append(what)
        return None if self.check else fn(*args, **kwargs)

    def project(self, name: str):
        found = self.id.find_project(name, domain_id=self.domain_id)
        return found or self._do(f"project {name}", self.id.create_project, name=name,
                                 domain_id=self.domain_id)

    def role(self, name: str):
        return self.id.find_role(name) or self._do(f"role {name}", self.id.create_role,
                                                   name=name)

    def service(self, svc: dict, endpoints: list) -> None:
        found = [s for s in self.id.services(type=svc["type"]) if s.name == svc["name"]]
        if found:
            service = found[0]
            if (service.description or "") != svc["description"]:
                self._do(f"service {svc['name']} description", self.id.update_service,
                         service, description=svc["description"])
        else:
            service = self._do(f"service {svc['name']}", self.id.create_service,
                               name=svc["name"], type=svc["type"],
                               description=svc["description"], is_enabled=True)
        for interface, url in sorted(svc["endpoints"].items()):
            have = [e for e in endpoints if service is not None
                    and e.service_id == service.id and e.interface == interface
                    and e.region_id == self.p["region"]]
            what = f"endpoint {svc['name']} {interface}"
            if not have:
                self._do(what, self.id.create_endpoint, service_id=getattr(service, "id", None),
                         interface=interface, url=url, region_id=self.p["region"])
            elif have[0].url != url:
                self._do(what, self.id.update_endpoint, have[0], url=url)

    def _password_works(self, user: dict) -> bool:
        from keystoneauth1 import exceptions, session
        from keystoneauth1.identity import v3

        auth = v3.Password(auth_url=self.p["auth"]["auth_url"], username=user["name"],
                           password=user["password"], user_domain_id=self.domain_id,
                           project_name=user["project"], project_domain_id=self.domain_id)
        try:
            session.Session(auth=auth).get_token()
        except exceptions.Unauthorized:
            return False
        return True

    def user(self, user: dict) -> None:
        project = self.project(user["project"])
        found = self.id.find_user(user["name"], domain_id=self.domain_id)
        created = found is None
        if created:
            found = self._do(f"user {user['name']}", self.id.create_user, name=user["name"],
                             password=user["password"], domain_id=self.domain_id,
                             default_project_id=getattr(project, "id", None))
        for name in user["roles"]:
            role = self.role(name)
            if (found is None or project is None or role is None
                    or not self.id.validate_user_has_project_role(project, found, role)):
                self._do(f"role {name} of {user['name']} on {user['project']}",
                         self.id.assign_project_role_to_user, project, found, role)
        if not created and found is not None and not self._password_works(user):
            self._do(f"password of {user['name']}", self.id.update_user, found,
                     password=user["password"])

    def converge(self) -> list[str]:
        for name in self.p["projects"]:
            self.project(name)
        for name in self.p["roles"]:
            self.role(name)
        endpoints = list(self.id.endpoints())
        for svc in self.p["services"]:
            self.service(svc, endpoints)
        for user in self.p["users"]:
            self.user(user)
        return self.changes


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "auth": {"type": "dict", "required": True, "options": {
                "auth_url": {"type": "str", "required": True},
                "username": {"type": "str", "required": True},
                "password": {"type": "str", "required": True, "no_log": True},
                "project_name": {"type": "str", "required": True},
                "domain": {"type": "str", "default": "Default"}}},
            "region": {"type": "str", "default": "RegionOne"},
            "projects": {"type": "list", "elements": "str", "default": []},
            "roles": {"type": "list", "elements": "str", "default": []},
            "services": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "type": {"type": "str", "required": True},
                "description": {"type": "str", "default": ""},
                "endpoints": {"type": "dict", "default": {}}}},
            "users": {"type": "list", "elements": "dict", "default": [], "options": {
                "name": {"type": "str", "required": True},
                "password": {"type": "str", "required": True, "no_log": True},
                "project": {"type": "str", "required": True},
                "roles": {"type": "list", "elements": "str", "default": []}}},
        },
        supports_check_mode=True,
    )
    try:
        import openstack.exceptions
    except ImportError as exc:
        module.fail_json(msg=f"openstacksdk is not installed here: {exc}")
    try:
        changes = Catalog(module.params, module.check_mode).converge()
    except openstack.exceptions.SDKException as exc:
        module.fail_json(msg=f"Keystone refused: {exc}")
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
