"""Debian's neutron-api WSGI application, with SQLAlchemy's mappers configured before
the first request (openstack-ha-lab, roles/neutron).

Neutron 21's port listing names Port.port_forwardings, a backref that exists only once
the mappers are configured, which any first query does. A worker whose first request
is a port listing (Nova deleting a server) fails it, and every later one, with
AttributeError: nothing else in an API-only server queries first."""

from neutron.cmd.eventlet.server import main_api_eventlet
from sqlalchemy import orm

application = main_api_eventlet()
orm.configure_mappers()
