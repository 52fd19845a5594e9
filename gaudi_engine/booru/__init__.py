"""booru"""
