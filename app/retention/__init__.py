"""Retention: old finished work and long-offline agents are deleted, by one replica at a time."""
